"""`edgevae score` in chunks: any chunk size writes the same scores file and summary as one chunk."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import CHANNELS, STD, make_bundle, noisy, stream, timestamps

from edgevae.agent.bundle import load_bundle
from edgevae.agent.drift import drift_warnings
from edgevae.agent.drift_tally import DriftTally
from edgevae.agent.offline import score_csv, score_table
from edgevae.agent.table import TableError, read_table
from edgevae.agent.table_options import ReadOptions

ROWS = 700  # with the stride-1 bundle: two full batches of 256 windows and a rest


@pytest.fixture(scope="module")
def stride1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every row ends a window, as in the benchmark; the bundle carries a distribution for drift."""
    return make_bundle(tmp_path_factory.mktemp("stride1"), stride=1, distribution=True)


def _file(path: Path, header: list[str], rows: list[list[object]], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _epoch(tmp_path: Path) -> Path:
    """Epoch seconds, labels, a text column left out by --channels, a fault and a move out of range (drift)."""
    values = noisy(stream(ROWS, fault=("pressure", 300, 340), phase=0.3), seed=1)
    values[450:, 2] += 20 * STD[2]
    rows = [
        [t, *row, int(300 <= i < 340), "x,y"]
        for i, (t, row) in enumerate(zip(timestamps(ROWS), values.tolist(), strict=True))
    ]
    return _file(tmp_path / "epoch.csv", ["timestamp", *CHANNELS, "anomaly", "note"], rows)


def _iso(tmp_path: Path) -> Path:
    """SKAB-style: ISO `datetime` with `;` and a decimal comma (kept in quotes in the output), repeated and
    backwards timestamps the agent drops, a long silence."""
    stamps = timestamps(ROWS)
    stamps[100] = stamps[99]
    stamps[200:205] = stamps[150]
    stamps[500:] += 3600.0  # beyond max_gap_periods: the window starts afresh
    values = noisy(stream(ROWS, phase=0.3), seed=2).tolist()
    iso = [datetime_text(t) for t in stamps.tolist()]
    return _file(
        tmp_path / "iso.csv", ["datetime", *CHANNELS], [[s, *row] for s, row in zip(iso, values, strict=True)], ";"
    )


def _gappy(tmp_path: Path) -> Path:
    """No time column (--period) and empty cells (--missing ffill)."""
    values: list[list[object]] = noisy(stream(ROWS, phase=0.3), seed=3).tolist()
    for i in range(50, ROWS, 97):
        values[i][1] = ""
    return _file(tmp_path / "gappy.csv", list(CHANNELS), values)


def datetime_text(t: float) -> str:
    return np.datetime_as_string(np.datetime64(int(t * 1000), "ms"), unit="ms").replace("T", " ").replace(".", ",")


FILES = {
    "epoch": (_epoch, ReadOptions(channels=CHANNELS)),
    "iso": (_iso, ReadOptions()),
    "gappy": (_gappy, ReadOptions(period=1.0, missing="ffill")),
}


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("which", ["bundle", "stride1"])
def test_scores_file_is_the_same_in_any_chunks(
    name: str, which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    bundle = request.getfixturevalue(which)
    make, options = FILES[name]
    path = make(tmp_path)
    whole = score_csv(bundle, path, tmp_path / "whole.csv", read=options, chunk_rows=10**6)
    small = score_csv(bundle, path, tmp_path / "small.csv", read=options, chunk_rows=7)
    assert (tmp_path / "small.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert dict(vars(small), out="") == dict(vars(whole), out="")
    if name == "iso":
        assert b'\r\n"2023-11-14 22:13:20,000",1700000000.0,' in (tmp_path / "small.csv").read_bytes()  # quoted
    # The rows and decisions are those of score_table on the table in memory.
    rows = score_table(bundle, read_table(path, options))
    with (tmp_path / "small.csv").open() as fh:
        body = list(csv.DictReader(fh))
    assert len(body) == len(rows) == whole.rows
    assert [int(r["is_anomaly"]) for r in body] == [int(r.is_anomaly) for r in rows]
    assert [r["score"] for r in body] == ["" if r.score is None else format(r.score, ".9g") for r in rows]
    assert whole.windows == sum(r.window_end for r in rows)
    if which == "stride1" and name == "epoch":
        assert whole.alerts == 2  # the fault, and the move out of range
        assert whole.drift
        assert whole.drift[0].startswith(f"input outside the training range: {CHANNELS[2]}")


def test_drift_warnings_are_the_same_chunk_by_chunk(stride1: Path) -> None:
    manifest = load_bundle(stride1).manifest
    values = noisy(stream(3000, phase=0.3), seed=4)
    values[1000:, 1] -= 30 * STD[1]
    scores = np.random.default_rng(5).gamma(2.0, 1.0, 2000) * 3
    tally = DriftTally.from_manifest(manifest)
    assert tally is not None
    for rows, block in zip(np.array_split(values, 13), np.array_split(scores, 13), strict=True):
        tally.add_values(rows)
        tally.add_scores(block)
    expected = drift_warnings(manifest, values, scores)
    assert len(expected) == 2
    assert tally.warnings() == expected


def test_a_fault_in_a_later_chunk_leaves_no_scores_file(bundle: Path, tmp_path: Path) -> None:
    values = stream(60).tolist()
    values[50][0] = "oops"
    path = _file(
        tmp_path / "in.csv",
        ["timestamp", *CHANNELS],
        [[t, *row] for t, row in zip(timestamps(60), values, strict=True)],
    )
    out = tmp_path / "scores.csv"
    with pytest.raises(TableError, match="line 52: expected a finite number in column 'temp'"):
        score_csv(bundle, path, out, chunk_rows=8)
    assert list(tmp_path.iterdir()) == [path]  # neither the scores nor the partial file
