"""Reading and writing sensor tables: delimiters, timestamps, label columns and error messages."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edgevae.agent.table import Table, TableError, infer_sample_period, read_table, read_tables, write_table
from edgevae.core.errors import DataError

SKAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "SKAB" / "data"
T0 = 1_581_168_647.0  # 2020-02-08 13:30:47 UTC


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "channels", "timestamps", "labels"),
    [
        # comma, epoch seconds
        ("timestamp,a,b\n10,1,2\n11,3,4\n", ("a", "b"), [10.0, 11.0], None),
        # semicolon, SKAB-style naive datetime (UTC)
        ("datetime;x\n2020-02-08 13:30:47;1.5\n2020-02-08 13:30:48;2\n", ("x",), [T0, T0 + 1], None),
        # ISO with T and Z, and with an explicit offset
        ("time,x\n2020-02-08T13:30:47Z,1\n2020-02-08T14:30:48+01:00,2\n", ("x",), [T0, T0 + 1], None),
        # label columns are never channels; labels come from `anomaly`, floats allowed
        ("ts;a;anomaly;changepoint\n1;5;0.0;0.0\n2;6;1.0;1.0\n", ("a",), [1.0, 2.0], [0, 1]),
        # `label` also gives labels; names are case-insensitive
        ("Timestamp,Label,v\n1,1,7\n2,0,8\n", ("v",), [1.0, 2.0], [1, 0]),
        # no named timestamp column: the first column is the timestamp
        ("when,v\n5,1\n6,2\n", ("v",), [5.0, 6.0], None),
        # byte-order mark, blank lines and spaces around numbers
        ("\ufefftimestamp,v\n\n1, 2.5 \n\n2,3\n", ("v",), [1.0, 2.0], None),
    ],
)
def test_read_table(
    tmp_path: Path, text: str, channels: tuple[str, ...], timestamps: list[float], labels: list[int] | None
) -> None:
    table = read_table(_write(tmp_path, text))
    assert table.channels == channels
    assert table.values.shape == (len(timestamps), len(channels))
    assert table.values.dtype == np.float64
    np.testing.assert_allclose(table.timestamps, timestamps)
    if labels is None:
        assert table.labels is None
    else:
        assert table.labels is not None
        assert table.labels.dtype == np.int8
        assert table.labels.tolist() == labels


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # a non-numeric cell names its line and column
        ("timestamp,a,b\n1,1,2\n2,1,oops\n", r"line 3: expected a finite number in column 'b', got 'oops'"),
        # an empty cell, and a NaN, are not readings
        ("timestamp,a\n1,\n", r"line 2: expected a finite number in column 'a'"),
        ("timestamp,a\n1,nan\n", r"line 2: expected a finite number"),
        # a row with the wrong number of fields
        ("timestamp,a,b\n1,2\n", r"line 2: expected 3 fields"),
        ("", r"empty file"),
        ("timestamp,a\n", r"line 1: expected data rows"),
        ("timestamp;anomaly;changepoint\n1;0;0\n", r"line 1: expected numeric channels"),
        ("timestamp,a\n2020-13-45 99:00:00,1\n", r"line 2: expected a timestamp"),
        ("timestamp,a,anomaly\n1,1,0\n2,1,2\n", r"line 3: expected a label 0 or 1"),
        ("timestamp,a,a\n1,1,1\n", r"unique channel names"),
    ],
)
def test_read_table_errors(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TableError, match=match) as caught:
        read_table(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, DataError)
    assert isinstance(caught.value, ValueError)


def test_read_tables_folder_is_recursive_and_sorted(tmp_path: Path) -> None:
    _write(tmp_path, "timestamp,v\n1,1\n", "b.csv")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "timestamp,v\n1,1\n", "a.csv")
    _write(tmp_path, "not a table", "notes.txt")
    assert [Path(t.path).relative_to(tmp_path).as_posix() for t in read_tables(tmp_path)] == ["b.csv", "sub/a.csv"]
    assert len(read_tables(tmp_path / "b.csv")) == 1


def test_read_tables_errors(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no .csv files"):
        read_tables(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_tables(tmp_path / "missing.csv")


@pytest.mark.parametrize("labels", [None, np.array([0, 1, 0], dtype=np.int8)])
def test_write_table_round_trip(tmp_path: Path, labels: np.ndarray | None) -> None:
    values = np.array([[1.0, 1e-7], [2.5, -3.0], [1 / 3, 1e9]])
    table = Table("x", np.array([T0, T0 + 0.5, T0 + 1.25]), values, ("a", "b c"), labels)
    write_table(table, tmp_path / "out" / "t.csv")
    back = read_table(tmp_path / "out" / "t.csv")
    assert back.channels == table.channels
    np.testing.assert_array_equal(back.values, values)
    np.testing.assert_allclose(back.timestamps, table.timestamps, rtol=0, atol=1e-6)
    assert (back.labels is None) == (labels is None)
    if labels is not None and back.labels is not None:
        np.testing.assert_array_equal(back.labels, labels)
    assert (tmp_path / "out" / "t.csv").read_text().startswith("timestamp,a,b c")


@pytest.mark.parametrize(
    ("timestamps", "period"),
    [
        ([0.0, 1.0, 2.0, 3.0], 1.0),
        # a gap and a repeated stamp don't move the median step
        ([0.0, 0.5, 1.0, 1.0, 1.5, 60.0, 60.5], 0.5),
    ],
)
def test_infer_sample_period(timestamps: list[float], period: float) -> None:
    assert infer_sample_period(np.array(timestamps)) == pytest.approx(period)


def test_infer_sample_period_needs_two_stamps() -> None:
    with pytest.raises(ValueError, match="two increasing timestamps"):
        infer_sample_period(np.array([5.0, 5.0]))


def test_ten_thousand_rows_read_quickly(tmp_path: Path) -> None:
    rows = 10_000
    stamps = [f"2024-01-01 {h:02d}:{m:02d}:{s:02d}" for h in range(3) for m in range(60) for s in range(60)][:rows]
    lines = ["datetime;" + ";".join(f"c{i}" for i in range(8)) + ";anomaly"]
    lines += [f"{stamps[i]};" + ";".join(str(i * 0.1 + c) for c in range(8)) + ";0" for i in range(rows)]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    started = time.perf_counter()
    table = read_table(path)
    assert time.perf_counter() - started < 2.0
    assert table.values.shape == (rows, 8)
    assert infer_sample_period(table.timestamps) == 1.0


@pytest.mark.skipif(not SKAB.is_dir(), reason=f"SKAB data not found at {SKAB}")
def test_skab_files() -> None:
    free = read_table(SKAB / "anomaly-free" / "anomaly-free.csv")
    assert free.channels[:2] == ("Accelerometer1RMS", "Accelerometer2RMS")
    assert len(free.channels) == 8
    assert free.labels is None
    assert infer_sample_period(free.timestamps) == pytest.approx(1.0)
    valve = read_table(SKAB / "valve1" / "0.csv")
    assert valve.channels == free.channels
    assert valve.labels is not None
    assert 0 < valve.labels.sum() < valve.rows
