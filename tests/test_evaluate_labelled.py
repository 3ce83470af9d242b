"""`edgevae evaluate --data FILE --label-column COL`: SKAB's protocols on a user's own labelled CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edgevae.agent.table import Table
from edgevae.cli.main import main
from edgevae.core.errors import DataError
from edgevae.evaluation.labelled import lead_rows

ROWS, FAULT = 900, (600, 700)
# Tiny and brief: a few seconds per model on one thread.
TINY = ["--train-flags", "--epochs 2 --window 16", "--precision", "fp32"]


def write_plant(path: Path, rows: int = ROWS, fault: tuple[int, int] | None = FAULT, gap: int | None = None) -> Path:
    """Three sines with noise, a time column in epoch milliseconds and a `fault` label column; within `fault`
    the second channel is offset by ten times its amplitude. `gap` empties one reading."""
    rng = np.random.default_rng(0)
    t = np.arange(rows, dtype=np.float64)
    values = np.stack([np.sin(t / 9), np.cos(t / 14), np.sin(t / 5 + 1)], axis=1) + 0.05 * rng.standard_normal(
        (rows, 3)
    )
    labels = np.zeros(rows, dtype=int)
    if fault is not None:
        values[fault[0] : fault[1], 1] += 10.0
        labels[fault[0] : fault[1]] = 1
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ts_ms", "a", "b", "c", "fault"])
        for i in range(rows):
            cells = [repr(v) for v in values[i].tolist()]
            if i == gap:
                cells[0] = ""
            writer.writerow([1_700_000_000_000 + 1000 * i, *cells, labels[i]])
    return path


def evaluate_cli(tmp_path: Path, *flags: str) -> int:
    read = ["--timestamp-column", "ts_ms", "--label-column", "fault"]
    return main(["evaluate", "--out", str(tmp_path / "report"), "--workdir", str(tmp_path / "work"), *read, *flags])


@pytest.mark.slow
def test_a_model_per_file_fits_the_rows_before_the_first_anomaly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_plant(tmp_path / "plant.csv", gap=100)
    assert evaluate_cli(tmp_path, "--data", str(data), "--missing", "ffill", *TINY) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# Detection quality on {data}")
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["dataset"]["fit_rows"] == {"plant": FAULT[0]}
    assert saved["dataset"]["missing"] == {"plant": {"rows_dropped": 0, "rows_filled": 1}}
    s = saved["results"]["lead"]["fp32"]
    assert s["rows"] == ROWS - FAULT[0]
    assert s["tp"] + s["fn"] == FAULT[1] - FAULT[0]
    assert s["tp"] > 0
    assert s["auroc"] > 0.5  # the offset channel scores above its normal rows
    assert s["trivial_f1"] == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))
    for line in ("| **edgevae FP32** |", "| flag everything |", "Per file (FP32):", f"| plant | {FAULT[0]} | 300 |"):
        assert line in printed
    assert "0 rows left out and 1 forward-filled for missing cells" in printed
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["pr-lead.png", "scores-lead.png"]


@pytest.mark.slow
def test_one_model_from_normal_data_scores_every_file_whole(tmp_path: Path) -> None:
    data = write_plant(tmp_path / "plant.csv")
    # Normal data without a label column, and a column the labelled file lacks: the channels are the labelled
    # file's, and its rows are all normal.
    normal = tmp_path / "normal.csv"
    normal.write_text(
        "\n".join(
            ["ts_ms,c,b,a,extra"]
            + [
                f"{1_600_000_000_000 + 1000 * i},{np.sin(i / 5 + 1)},{np.cos(i / 14)},{np.sin(i / 9)},7"
                for i in range(600)
            ]
        )
        + "\n"
    )
    assert evaluate_cli(tmp_path, "--data", str(data), "--train", str(normal), "--no-plots", *TINY) == 0
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    s = saved["results"]["normal-data"]["fp32"]
    assert (s["rows"], s["tp"] + s["fn"]) == (ROWS, FAULT[1] - FAULT[0])
    assert saved["dataset"]["fit_rows"] == {str(normal): 600}
    assert "One model fits the normal data" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("files", "flags", "code", "message"),
    [
        # no labelled anomaly anywhere: nothing to measure detection against
        ({"p.csv": None}, [], 3, "no row labelled 1 in column 'fault' in its 1 file"),
        # a file that starts in its anomaly has no normal rows to fit on
        ({"p.csv": (0, 50)}, [], 3, "its first row is labelled 1 in column 'fault'"),
        # the lead protocol names a file without an anomaly among others, before it trains on any
        (
            {"a.csv": (100, 150), "b.csv": None},
            [],
            3,
            "b.csv: no row labelled 1 in column 'fault'; the lead protocol fits",
        ),
        # the protocols of SKAB are not those of labelled data
        ({"p.csv": FAULT}, ["--protocol", "leaderboard"], 2, "--protocol and --sweep are SKAB's"),
    ],
)
def test_labelled_data_that_cannot_be_evaluated_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, tuple[int, int] | None],
    flags: list[str],
    code: int,
    message: str,
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, fault in files.items():
        write_plant(folder / name, rows=200, fault=fault)
    assert evaluate_cli(tmp_path, "--data", str(folder), *flags) == code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_train_needs_a_label_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--train", str(tmp_path)]
    assert main(args) == 2
    assert "--train needs --label-column COL" in capsys.readouterr().err


def test_a_folder_that_is_not_skab_points_to_label_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 3
    assert "or --label-column COL for your own CSVs" in capsys.readouterr().err


def test_too_few_lead_rows_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_plant(tmp_path / "short.csv", rows=200, fault=(20, 60))
    assert evaluate_cli(tmp_path, "--data", str(data), *TINY) == 3
    expected = f"{data}: fitting on its first 20 rows, before its first labelled anomaly: --window 16: the val split"
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("labels", "fraction", "rows"),
    [
        ([0, 0, 0, 0, 1, 1, 0], 1.0, 4),  # every row before the first anomaly
        ([0, 0, 0, 0, 1, 1, 0], 0.5, 2),  # the leading half of them; the rest is tested
        ([0, 1, 0, 1], 0.1, 1),  # at least one row
    ],
)
def test_lead_rows(labels: list[int], fraction: float, rows: int) -> None:
    n = len(labels)
    table = Table("t", np.arange(n, dtype=np.float64), np.zeros((n, 1)), ("a",), np.array(labels, dtype=np.int8))
    assert lead_rows(table, "anomaly", fraction) == rows


def test_lead_rows_need_an_anomaly_after_a_normal_row() -> None:
    table = Table("t", np.arange(3.0), np.zeros((3, 1)), ("a",), np.zeros(3, dtype=np.int8))
    with pytest.raises(DataError, match="t: no row labelled 1 in column 'anomaly'"):
        lead_rows(table, "anomaly")
