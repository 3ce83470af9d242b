"""`edgevae score`: one output row per input row, from the same Detector the live agent runs."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import CHANNELS, STRIDE, WINDOW, expected_alerts, reference_scores, stream, timestamps

from edgevae.agent.offline import score_csv, score_table
from edgevae.agent.table import TableError, read_table

ROWS = 120


def write_csv(path: Path, ts: np.ndarray, values: np.ndarray, header: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for t, row in zip(ts.tolist(), values.tolist(), strict=True):
            cells = {"timestamp": t, "anomaly": 0, "spare": 1.5, **dict(zip(CHANNELS, row, strict=True))}
            writer.writerow([cells[h] for h in header])
    return path


@pytest.fixture
def faulty_csv(tmp_path: Path) -> tuple[Path, np.ndarray]:
    values = stream(ROWS, fault=("pressure", 40, 70))
    # Columns in another order, an extra channel and a label column: matched to the bundle by name.
    header = ["timestamp", "flow", "spare", "temp", "anomaly", "pressure"]
    return write_csv(tmp_path / "in.csv", timestamps(ROWS), values, header), values


def test_score_csv(bundle: Path, faulty_csv: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, values = faulty_csv
    out = tmp_path / "out.csv"
    summary = score_csv(bundle, path, out)
    with out.open() as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    # The input's own timestamp and label columns come first, as the file wrote them.
    assert header[:2] == ["input_timestamp", "anomaly"]
    assert [row[:2] for row in body[:2]] == [[str(float(t)), "0"] for t in timestamps(ROWS)[:2]]
    header, body = header[2:], [row[2:] for row in body]
    assert header == ["timestamp", "score", "threshold", "is_anomaly", "error_temp", "error_pressure", "error_flow"]
    assert len(body) == ROWS
    scores, errors = reference_scores(values)
    ends = [WINDOW - 1 + k * STRIDE for k in range(len(scores))]
    for i, row in enumerate(body):
        assert float(row[0]) == timestamps(ROWS)[i]
        assert row[2] == "1"
        if i < WINDOW - 1:
            assert [row[1], *row[4:]] == ["", "", "", ""]  # before the first full window
            continue
        k = max(j for j, end in enumerate(ends) if end <= i)  # the latest window at or before this row
        assert float(row[1]) == pytest.approx(scores[k], rel=1e-5)
        assert [float(e) for e in row[4:]] == pytest.approx(errors[k].tolist(), rel=1e-5)
    (_, opened), (_, ended) = expected_alerts(values)
    flags = [int(row[3]) for row in body]
    assert flags == [int(ends[opened] <= i < ends[ended]) for i in range(ROWS)]
    assert (summary.rows, summary.windows, summary.alerts) == (ROWS, len(scores), 1)
    assert summary.anomalous_rows == sum(flags)
    assert "tiny-zscore 1.0.0" in str(summary)


def test_missing_channels_are_named(bundle: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", timestamps(20), stream(20), ["timestamp", "temp", "spare"])
    with pytest.raises(TableError, match=r"channels \['pressure', 'flow'\]; the table has \['temp', 'spare'\]"):
        score_table(bundle, read_table(path))


def test_rows_the_agent_would_drop_are_not_scored(bundle: Path, tmp_path: Path) -> None:
    ts = timestamps(WINDOW + 2)
    ts[3] = ts[2]  # a repeated timestamp
    ts[5] = ts[1]  # a reading from the past
    path = write_csv(tmp_path / "in.csv", ts, stream(WINDOW + 2), ["timestamp", *CHANNELS])
    dropped: Counter[str] = Counter()
    rows = score_table(bundle, read_table(path), dropped=dropped)
    assert dropped == {"duplicate_ts": 1, "out_of_order": 1}
    assert len(rows) == WINDOW + 2
    assert [r.window_end for r in rows].index(True) == WINDOW + 1  # two rows later than without the drops


def test_edgevae_score_command_runs_without_torch(
    bundle: Path, faulty_csv: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """`edgevae score` is how a bundle is checked on a device or a laptop without torch."""
    out = tmp_path / "cli.csv"
    code = (
        "import sys; from edgevae.cli.main import main; "
        f"rc = main(['score', '--bundle', {str(bundle)!r}, '--input', {str(faulty_csv[0])!r}, '--out', {str(out)!r}]); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    header = out.read_text().splitlines()[0].split(",")
    assert header[:6] == ["input_timestamp", "anomaly", "timestamp", "score", "threshold", "is_anomaly"]
    assert len(out.read_text().splitlines()) == ROWS + 1


def test_scores_keep_the_inputs_own_timestamp_and_labels(bundle: Path, tmp_path: Path) -> None:
    """SKAB-style input: an ISO `datetime` column and `anomaly` labels come back as they were written."""
    stamps = [f"2020-03-09 10:{m:02d}:{s:02d}" for m in range(2) for s in range(60)][:40]
    labels = [int(20 <= i < 30) for i in range(40)]
    path = tmp_path / "skab.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["datetime", *CHANNELS, "anomaly"])
        for i, row in enumerate(stream(40).tolist()):
            writer.writerow([stamps[i], *row, labels[i]])
    out = tmp_path / "scores.csv"
    score_csv(bundle, path, out)
    with out.open() as fh:
        header, *body = list(csv.reader(fh))
    assert header[:3] == ["datetime", "anomaly", "timestamp"]
    assert [row[0] for row in body] == stamps
    assert [int(row[1]) for row in body] == labels
    assert float(body[0][2]) == 1583748000.0  # 2020-03-09 10:00:00 UTC


def _edgevae(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgevae.cli.main", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_file_without_a_time_column_needs_period(bundle: Path, tmp_path: Path) -> None:
    """Refused in one line that names the two ways out; read as evenly spaced rows with --period."""
    path = tmp_path / "untimed.csv"
    lines = [",".join(CHANNELS)] + [",".join(map(str, row)) for row in stream(40).tolist()]
    lines[10] = ",".join(["", *lines[10].split(",")[1:]])  # one empty cell, on line 11
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.csv"
    refused = _edgevae("score", "--bundle", str(bundle), "--input", str(path), "--out", str(out))
    assert refused.returncode == 3
    assert refused.stderr == (
        f"edgevae score: error: {path}: line 1: expected a timestamp column (one named timestamp, datetime, time, "
        "ts, date), got ['temp', 'pressure', 'flow'] (pass --timestamp-column NAME, or --period SECONDS if the rows "
        "are evenly spaced)\n"
    )
    assert not out.exists()
    gap = _edgevae("score", "--bundle", str(bundle), "--input", str(path), "--out", str(out), "--period", "1")
    assert gap.returncode == 3
    assert "line 11: expected a finite number in column 'temp', got ''" in gap.stderr
    assert "--missing drop leaves such rows out" in gap.stderr
    accepted = _edgevae(
        "score", "--bundle", str(bundle), "--input", str(path), "--out", str(out), "--period", "1", "--missing", "drop"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "39 rows (1 left out for missing cells)" in accepted.stdout
    with out.open() as fh:
        header, *body = list(csv.reader(fh))
    # No input time column to keep: `timestamp` is the synthesized seconds, and the dropped row's slot is empty.
    assert header[:2] == ["timestamp", "score"]
    assert [float(row[0]) for row in body[8:10]] == [8.0, 10.0]
