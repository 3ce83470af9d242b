"""Reading and writing sensor tables: delimiters, timestamps, label columns and error messages."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from edgevae.agent.table import Table, TableError, infer_sample_period, read_table, read_tables, write_table
from edgevae.agent.table_options import ReadOptions, add_read_arguments, read_options_from_args
from edgevae.core.errors import ConfigError, DataError

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
    ("text", "options", "channels", "timestamps"),
    [
        # epoch milliseconds, told apart from seconds by magnitude
        ("timestamp,a\n1581168647000,1\n1581168648500,2\n", ReadOptions(), ("a",), [T0, T0 + 1.5]),
        # epoch seconds of today stay seconds
        ("ts,a\n1581168647,1\n1581168648,2\n", ReadOptions(), ("a",), [T0, T0 + 1]),
        # small numbers are seconds unless --timestamp-unit ms says otherwise
        ("ts,a\n0,1\n500,2\n", ReadOptions(timestamp_unit="ms"), ("a",), [0.0, 0.5]),
        # a forced unit wins over the magnitude
        ("ts,a\n1581168647000,1\n", ReadOptions(timestamp_unit="s"), ("a",), [T0 * 1000]),
        ("ts,a\n2020-02-08 13:30:47,1\n", ReadOptions(timestamp_unit="iso"), ("a",), [T0]),
        # --timestamp-column names a column no name rule would find
        ("when,v\n5,1\n6,2\n", ReadOptions(timestamp_column="when"), ("v",), [5.0, 6.0]),
        # ... or picks between two time-like columns; the other one is then a channel
        ("time,ts,v\n9,5,1\n9,6,2\n", ReadOptions(timestamp_column="ts"), ("time", "v"), [5.0, 6.0]),
        # names are matched ignoring case when only one column matches
        ("When,v\n5,1\n", ReadOptions(timestamp_column="when"), ("v",), [5.0]),
        # --period: no time column, rows evenly spaced from 0
        ("a,b\n1,2\n3,4\n5,6\n", ReadOptions(period=0.5), ("a", "b"), [0.0, 0.5, 1.0]),
        # --channels picks and orders; a column it leaves out is not read, text or not
        ("timestamp,a,b,note\n1,1,2,hi\n", ReadOptions(channels=("b", "a")), ("b", "a"), [1.0]),
    ],
)
def test_read_options(
    tmp_path: Path, text: str, options: ReadOptions, channels: tuple[str, ...], timestamps: list[float]
) -> None:
    table = read_table(_write(tmp_path, text), options)
    assert table.channels == channels
    np.testing.assert_allclose(table.timestamps, timestamps)
    assert (table.timestamp_text is None) == (options.period is not None)


def test_channels_are_read_in_the_order_asked(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path, "timestamp,a,b,c\n1,1,2,3\n"), ReadOptions(channels=("c", "a")))
    assert table.values.tolist() == [[3.0, 1.0]]


def test_label_column_names_the_labels(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path, "timestamp,v,fault\n1,1,0\n2,2,1\n"), ReadOptions(label_column="fault"))
    assert (table.channels, table.label_column) == (("v",), "fault")
    assert table.labels is not None
    assert table.labels.tolist() == [0, 1]


GAPPY = "timestamp,a,b\n1,1,10\n2,,20\n3,nan,x\n4,4,40\n5,5,\n"


@pytest.mark.parametrize(
    ("text", "options", "timestamps", "values", "dropped", "filled"),
    [
        # drop: every row with an empty, NaN or text cell is left out
        (GAPPY, ReadOptions(missing="drop"), [1, 4], [[1, 10], [4, 40]], 3, 0),
        # ffill: each channel repeats its last reading
        (GAPPY, ReadOptions(missing="ffill"), [1, 2, 3, 4, 5], [[1, 10], [1, 20], [1, 20], [4, 40], [5, 40]], 0, 3),
        # ffill up to the limit exactly
        (
            "timestamp,a\n1,1\n2,\n3,\n4,4\n",
            ReadOptions(missing="ffill", ffill_limit=2),
            [1, 2, 3, 4],
            [[1]] * 3 + [[4]],
            0,
            2,
        ),
        # drop also takes a row whose time is missing or unreadable
        ("timestamp,a\n1,1\n,2\nnoon,3\n4,4\n", ReadOptions(missing="drop"), [1, 4], [[1], [4]], 2, 0),
        # with --period a dropped row leaves its time slot empty
        ("a,b\n1,2\n,3\n4,5\n", ReadOptions(period=1.0, missing="drop"), [0, 2], [[1, 2], [4, 5]], 1, 0),
        # a clean file: nothing dropped or filled, whatever the policy
        ("timestamp,a\n1,1\n", ReadOptions(missing="ffill"), [1], [[1]], 0, 0),
    ],
)
def test_missing_policies(
    tmp_path: Path,
    text: str,
    options: ReadOptions,
    timestamps: list[float],
    values: list[list[float]],
    dropped: int,
    filled: int,
) -> None:
    table = read_table(_write(tmp_path, text), options)
    np.testing.assert_allclose(table.timestamps, timestamps)
    np.testing.assert_array_equal(table.values, values)
    assert (table.rows_dropped, table.rows_filled) == (dropped, filled)
    if table.timestamp_text is not None:
        assert len(table.timestamp_text) == table.rows


def test_dropped_and_filled_rows_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, GAPPY)
    with caplog.at_level(logging.INFO, logger="edgevae.agent.table"):
        read_table(path, ReadOptions(missing="drop"))
        read_table(path, ReadOptions(missing="ffill"))
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: dropped 3 of 5 rows with a missing or non-numeric cell",
        f"{path}: forward-filled a missing reading in 3 of 5 rows",
    ]


@pytest.mark.parametrize(
    ("text", "options", "match", "remedy"),
    [
        # no time column and no flag saying which, or that the rows are evenly spaced
        (
            "when,v\n5,1\n",
            ReadOptions(),
            r"line 1: expected a timestamp column \(one named timestamp, datetime, time, ts, date\), "
            r"got \['when', 'v'\]",
            "pass --timestamp-column NAME, or --period SECONDS if the rows are evenly spaced",
        ),
        # flags that name a column the file does not have list the file's columns
        (
            "timestamp,a,b\n1,1,2\n",
            ReadOptions(channels=("a", "z")),
            r"line 1: --channels 'z': no such column; the file's columns are \['timestamp', 'a', 'b'\]",
            None,
        ),
        ("ts,a\n1,1\n", ReadOptions(timestamp_column="t"), r"--timestamp-column 't': no such column", None),
        ("ts,a\n1,1\n", ReadOptions(label_column="fault"), r"--label-column 'fault': no such column", None),
        # a channel cannot also be time or labels
        ("ts,a\n1,1\n", ReadOptions(channels=("ts",)), r"--channels 'ts' is the time column", None),
        # fail, the default, names the first missing cell and the policies that would accept it
        (
            "ts,a,b\n1,1,2\n2,,3\n",
            ReadOptions(),
            r"line 3: expected a finite number in column 'a', got ''",
            "--missing drop",
        ),
        # a forced unit says what it expected
        (
            "ts,a\n2020-02-08,1\n",
            ReadOptions(timestamp_unit="s"),
            r"expected a timestamp in epoch seconds in column 'ts'",
            None,
        ),
        # ffill beyond its limit names the gap's first line, the column and the limit
        (
            "timestamp,a\n1,1\n2,\n3,\n4,\n5,5\n",
            ReadOptions(missing="ffill", ffill_limit=2),
            r"line 3: column 'a' is missing on 3 consecutive rows \(lines 3-5\), more than --ffill-limit 2",
            "a larger --ffill-limit fills them",
        ),
        # nothing to fill a first row from
        (
            "timestamp,a\n1,\n2,2\n",
            ReadOptions(missing="ffill"),
            r"line 2: column 'a' has no reading on the first row",
            None,
        ),
        # ffill repeats readings, never a time or a label
        (
            "timestamp,a\n1,1\n,2\n",
            ReadOptions(missing="ffill"),
            r"line 3: expected a timestamp .* in column 'timestamp', got ''",
            None,
        ),
        ("timestamp,a,anomaly\n1,1,0\n2,2,\n", ReadOptions(missing="ffill"), r"line 3: expected a label 0 or 1", None),
        # a label that is a number but not 0 or 1 is wrong data, not a gap
        ("timestamp,a,anomaly\n1,1,0\n2,1,2\n", ReadOptions(missing="drop"), r"line 3: expected a label 0 or 1", None),
        # dropping every row leaves nothing
        (
            "timestamp,a\n1,\n",
            ReadOptions(missing="drop"),
            r"line 1: expected rows with every cell read, but all 1",
            None,
        ),
    ],
)
def test_read_option_errors(tmp_path: Path, text: str, options: ReadOptions, match: str, remedy: str | None) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TableError, match=match) as caught:
        read_table(path, options)
    assert str(caught.value).startswith(f"{path}: line ")
    if remedy is not None:
        assert remedy in caught.value.describe()


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        ([], ReadOptions()),
        (
            ["--channels", " b, a", "--missing", "ffill", "--ffill-limit", "5"],
            ReadOptions(channels=("b", "a"), missing="ffill", ffill_limit=5),
        ),
        (["--period", "0.1", "--label-column", "fault"], ReadOptions(period=0.1, label_column="fault")),
        (["--timestamp-column", "t", "--timestamp-unit", "ms"], ReadOptions(timestamp_column="t", timestamp_unit="ms")),
    ],
)
def test_read_flags(argv: list[str], options: ReadOptions) -> None:
    parser = argparse.ArgumentParser()
    add_read_arguments(parser)
    assert read_options_from_args(parser.parse_args(argv)) == options
    # The flags that give the options, as `edgevae evaluate` passes them on.
    assert read_options_from_args(parser.parse_args(options.flags())) == options


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ffill-limit", "2"], "--ffill-limit needs --missing ffill, got --missing fail"),
        (["--missing", "ffill", "--ffill-limit", "0"], "--ffill-limit must be >= 1, got 0"),
        (["--period", "0"], "--period must be a number of seconds > 0, got 0.0"),
        (["--period", "1", "--timestamp-column", "t"], "--period spaces the rows evenly"),
        (["--channels", "a,,b"], "--channels expects comma-separated column names"),
        (["--channels", "a,a"], "--channels names a column twice: ['a', 'a']"),
    ],
)
def test_bad_read_flags(argv: list[str], message: str) -> None:
    parser = argparse.ArgumentParser()
    add_read_arguments(parser)
    with pytest.raises(ConfigError) as caught:
        read_options_from_args(parser.parse_args(argv))
    assert message in str(caught.value)


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
