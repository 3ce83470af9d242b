"""Sensor tables read in chunks: any chunk size reads a file as the whole-file reader does."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edgevae.agent.table import Table, TableError, read_table, table_of
from edgevae.agent.table_cells import iso_seconds
from edgevae.agent.table_options import ReadOptions
from edgevae.agent.table_stream import TableStream


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _chunked(path: Path, options: ReadOptions, chunk_rows: int) -> Table:
    stream = TableStream(path, options, chunk_rows)
    return table_of(stream, list(stream))


@pytest.mark.parametrize(
    ("text", "options", "timestamps", "values", "filled"),
    [
        # a gap that starts in one chunk and ends in the next is filled from the reading before it
        ("timestamp,a\n1,1\n2,\n3,\n4,4\n", ReadOptions(missing="ffill"), [1, 2, 3, 4], [1, 1, 1, 4], 2),
        # ... up to the limit exactly, counted across the boundary
        ("timestamp,a\n1,1\n2,\n3,\n4,4\n", ReadOptions(missing="ffill", ffill_limit=2), [1, 2, 3, 4], [1, 1, 1, 4], 2),
        # a chunk that is all gap is filled from the chunk before it
        ("timestamp,a\n1,7\n2,\n3,\n4,\n5,5\n", ReadOptions(missing="ffill"), [1, 2, 3, 4, 5], [7, 7, 7, 7, 5], 3),
        # --period counts rows from the top of the file: a dropped row keeps its slot in a later chunk
        ("a\n1\n2\n\n3\n,\nx\n4\n", ReadOptions(period=0.5, missing="drop"), [0, 0.5, 1, 2], [1, 2, 3, 4], 0),
        # blank lines and rows of empty cells are skipped wherever a chunk starts or ends
        ("timestamp,a\n\n1,1\n,\n\n2,2\n  \n3,3\n", ReadOptions(), [1, 2, 3], [1, 2, 3], 0),
        # a quoted cell with a line break spans the chunk boundary
        ('timestamp,a,note\n1,1,"x\ny"\n2,2,z\n', ReadOptions(channels=("a",)), [1, 2], [1, 2], 0),
    ],
)
@pytest.mark.parametrize("chunk_rows", [1, 2, 3])
def test_chunks_read_as_the_whole_file(
    tmp_path: Path,
    text: str,
    options: ReadOptions,
    timestamps: list[float],
    values: list[float],
    filled: int,
    chunk_rows: int,
) -> None:
    path = _write(tmp_path, text)
    table = _chunked(path, options, chunk_rows)
    np.testing.assert_array_equal(table.timestamps, timestamps)
    np.testing.assert_array_equal(table.values[:, 0], values)
    assert table.rows_filled == filled
    whole = read_table(path, options)
    np.testing.assert_array_equal(whole.values, table.values)
    text = [t.timestamp_text.tolist() if t.timestamp_text is not None else None for t in (whole, table)]
    assert text[0] == text[1]


BODY = "".join(f"{i},{i}\n" for i in range(1, 21))  # lines 2-21


@pytest.mark.parametrize(
    ("text", "options", "match"),
    [
        # a bad cell on line 16, in the fourth chunk of five rows
        ("timestamp,a\n" + BODY.replace("15,15\n", "15,oops\n"), ReadOptions(), r"line 16: expected a finite number"),
        # blank lines before it still count
        ("timestamp,a\n\n\n" + BODY.replace("15,15\n", "15,oops\n"), ReadOptions(), r"line 18: expected a finite"),
        # a row of the wrong width, and a label that is not 0 or 1, in a later chunk
        ("timestamp,a\n" + BODY.replace("17,17\n", "17,17,1\n"), ReadOptions(), r"line 18: expected 2 fields"),
        (
            "timestamp,a,anomaly\n" + BODY.replace("\n", ",0\n").replace("9,9,0", "9,9,3"),
            ReadOptions(),
            r"line 10: .*0 or 1",
        ),
        # a gap longer than the limit across chunks names all its lines
        (
            "timestamp,a\n" + BODY.replace("4,4\n", "4,\n").replace("5,5\n", "5,\n").replace("6,6\n", "6,\n"),
            ReadOptions(missing="ffill", ffill_limit=2),
            r"line 5: column 'a' is missing on 3 consecutive rows \(lines 5-7\), more than --ffill-limit 2",
        ),
        # ... also when it runs to the end of the file
        ("timestamp,a\n" + BODY + "21,\n22,\n", ReadOptions(missing="ffill", ffill_limit=1), r"lines 22-23"),
        # every row dropped: found only at the end
        ("timestamp,a\n" + BODY.replace(",", ",x"), ReadOptions(missing="drop"), r"line 1: .* but all 20 have a gap"),
    ],
)
def test_a_fault_in_a_later_chunk_names_its_line(tmp_path: Path, text: str, options: ReadOptions, match: str) -> None:
    path = _write(tmp_path, text)
    for chunk_rows in (5, 1000):
        with pytest.raises(TableError, match=match):
            _chunked(path, options, chunk_rows)


def test_auto_time_is_decided_once_for_the_file(tmp_path: Path) -> None:
    """Milliseconds in every chunk, though a later chunk alone would read as seconds."""
    text = "timestamp,a\n" + "".join(f"{t},1\n" for t in (1581168647000, 1581168648000, 1581168649000, 5, 6))
    table = _chunked(_write(tmp_path, text), ReadOptions(), 2)
    assert table.timestamps.tolist() == [1581168647.0, 1581168648.0, 1581168649.0, 0.005, 0.006]


@pytest.mark.parametrize(
    "cell",
    [
        "2020-02-08 13:30:47",  # naive: UTC
        "2020-02-08T13:30:47Z",
        "2020-02-08T13:30:47.250+01:00",
        "2020-02-08T13:30:47.123456-05:30",
        "2024-02-29T23:59:59",  # a leap day
        "2023-02-29T00:00:00",  # not one: unreadable
        "2020-02-08T24:00:00",  # hour 24: unreadable
        "2020-02-08T13:30:47.5",  # a fraction of another length: read by datetime
        " 2020-02-08 13:30:47",  # spaces around: read by datetime, which strips them
        "2020-02-08",  # a date alone
        "9999-12-31T23:59:59-01:00",  # past datetime's range once the offset is applied
        "",
    ],
)
def test_iso_cells_read_as_datetime_reads_them(cell: str) -> None:
    text = cell.strip()
    try:
        stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        expected = (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        expected = float("nan")
    got = iso_seconds(np.array([cell, "2020-02-08 13:30:47"]))[0]
    assert got == expected or (np.isnan(got) and np.isnan(expected))
