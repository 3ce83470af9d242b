"""Sensor tables: CSV files of a timestamp column, numeric channels and optional label columns.

`read_table` is the one reader of every command; `ReadOptions` (edgevae.agent.table_options) say which
column is time, which are channels and labels, and what a missing cell means.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgevae.agent.table_cells import fill_forward, gaps, numbers, timestamps
from edgevae.agent.table_csv import TableError as TableError  # re-exported: readers catch it from here
from edgevae.agent.table_csv import csv_paths, parse_csv
from edgevae.agent.table_csv import error as _error
from edgevae.agent.table_options import ReadOptions

logger = logging.getLogger(__name__)

TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "ts", "date")
LABEL_NAMES = ("anomaly", "changepoint", "label")
# `changepoint` marks onsets only, so row labels come from the first of these that is present.
ROW_LABEL_NAMES = ("anomaly", "label")
DEFAULT_READ = ReadOptions()
_TIMESTAMP_HINTS = {
    "s": "a timestamp in epoch seconds",
    "ms": "a timestamp in epoch milliseconds",
    "iso": "a timestamp (ISO-8601 such as 2020-02-08 13:30:47, naive = UTC, or epoch seconds or milliseconds)",
}
_MISSING_REMEDY = "--missing drop leaves such rows out; --missing ffill repeats a channel's last reading"


@dataclass(frozen=True)
class Table:
    path: str
    timestamps: np.ndarray  # (rows,) float64 epoch seconds
    values: np.ndarray  # (rows, channels) float64
    channels: tuple[str, ...]
    labels: np.ndarray | None  # (rows,) int8 0/1 from `anomaly` or `label`, if present
    # As the file wrote them, for outputs that keep the input's own columns (read_table fills these).
    timestamp_column: str = ""
    timestamp_text: np.ndarray | None = None  # (rows,) str; None when --period made the timestamps
    label_column: str = ""
    # What --missing did: rows left out (drop), rows with a reading repeated from the row above (ffill).
    rows_dropped: int = 0
    rows_filled: int = 0

    def __post_init__(self) -> None:
        rows = self.timestamps.shape[0]
        if self.timestamps.ndim != 1 or self.values.shape != (rows, len(self.channels)):
            msg = (
                f"{self.path}: expected timestamps (rows,) and values (rows, {len(self.channels)}), "
                f"got {self.timestamps.shape} and {self.values.shape}"
            )
            raise ValueError(msg)
        if self.labels is not None and self.labels.shape != (rows,):
            msg = f"{self.path}: expected labels of shape ({rows},), got {self.labels.shape}"
            raise ValueError(msg)

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class _Columns:
    timestamp: int | None  # None: --period spaces the rows
    channels: list[int]
    label: int | None


def read_table(path: str | Path, options: ReadOptions = DEFAULT_READ) -> Table:
    path = Path(path)
    header, header_line, rows, lines = parse_csv(path)
    cols = _columns(path, header, header_line, options)
    cells = np.array(rows, dtype=str)
    values = numbers(cells[:, cols.channels])
    unit = "period"
    if cols.timestamp is None or options.period is not None:
        assert options.period is not None
        # From the row's place in the file, so a row dropped below leaves its slot empty.
        stamps = np.arange(len(rows), dtype=np.float64) * options.period
    else:
        stamps, unit = timestamps(cells[:, cols.timestamp], options.timestamp_unit)
    labels = None
    if cols.label is not None:
        labels = numbers(cells[:, [cols.label]])[:, 0]
        wrong = np.flatnonzero(np.isfinite(labels) & (labels != 0) & (labels != 1))
        if wrong.size:
            i = int(wrong[0])
            got = rows[i][cols.label]
            raise _error(path, lines[i], f"expected a label 0 or 1 in column {header[cols.label]!r}, got {got!r}")
    # Per row and column of the file, the cells that hold no usable value.
    missing = np.zeros(cells.shape, dtype=bool)
    missing[:, cols.channels] = np.isnan(values)
    if unit != "period":
        missing[:, cols.timestamp] = np.isnan(stamps)
    if labels is not None:
        missing[:, cols.label] = np.isnan(labels)
    keep = ~missing.any(axis=1)
    if not keep.all():
        _check_policy(path, header, cells, lines, missing, cols, unit, options)
        if options.missing == "ffill":
            values = fill_forward(values)
            keep = np.ones(len(rows), dtype=bool)
    dropped, filled = int(np.count_nonzero(~keep)), int(np.count_nonzero(missing.any(axis=1) & keep))
    if not keep.any():
        raise _error(path, header_line, f"expected rows with every cell read, but all {len(rows)} have a gap")
    if dropped:
        logger.info("%s: dropped %d of %d rows with a missing or non-numeric cell", path, dropped, len(rows))
    if filled:
        logger.info("%s: forward-filled a missing reading in %d of %d rows", path, filled, len(rows))
    logger.debug("read %s: %d rows, %d channels, time %s", path, len(rows), len(cols.channels), unit)
    return Table(
        str(path),
        stamps[keep],
        values[keep],
        tuple(header[i] for i in cols.channels),
        None if labels is None else labels[keep].astype(np.int8),
        header[cols.timestamp] if cols.timestamp is not None else "",
        # A copy: a view would keep every cell of the file alive with the table.
        cells[keep, cols.timestamp].copy() if cols.timestamp is not None else None,
        header[cols.label] if cols.label is not None else "",
        rows_dropped=dropped,
        rows_filled=filled,
    )


def read_tables(path: str | Path, options: ReadOptions = DEFAULT_READ) -> list[Table]:
    """One file, or every *.csv under a folder (recursively), in sorted path order."""
    return [read_table(p, options) for p in csv_paths(path)]


def write_table(table: Table, path: str | Path) -> None:
    """Comma CSV: `timestamp` as ISO-8601 UTC, the channels, then `anomaly` if the table has labels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["timestamp", *table.channels] + (["anomaly"] if table.labels is not None else [])
    stamps = [datetime.fromtimestamp(t, tz=timezone.utc).isoformat() for t in table.timestamps.tolist()]
    values = table.values.tolist()
    labels = table.labels.tolist() if table.labels is not None else None
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, stamp in enumerate(stamps):
            writer.writerow([stamp, *values[i], *([labels[i]] if labels is not None else [])])


def infer_sample_period(timestamps: np.ndarray) -> float:
    """Median positive step between timestamps, in seconds; robust to gaps and repeated stamps."""
    steps = np.diff(np.asarray(timestamps, dtype=np.float64))
    steps = steps[steps > 0]
    if steps.size == 0:
        msg = "cannot infer a sample period: expected at least two increasing timestamps"
        raise ValueError(msg)
    return float(np.median(steps))


def _columns(path: Path, header: list[str], line: int, options: ReadOptions) -> _Columns:
    """Which columns are time, channels and labels, by the options or else by name."""
    lower = [name.lower() for name in header]
    label = _named(path, header, line, options.label_column, "--label-column")
    if label is None:
        label = next((lower.index(name) for name in ROW_LABEL_NAMES if name in lower), None)
    ts = _named(path, header, line, options.timestamp_column, "--timestamp-column")
    if ts is None:
        ts = next((i for i, name in enumerate(lower) if name in TIMESTAMP_NAMES), None)
    if ts is None and options.period is None:
        expected = f"expected a timestamp column (one named {', '.join(TIMESTAMP_NAMES)}), got {header}"
        remedy = "pass --timestamp-column NAME, or --period SECONDS if the rows are evenly spaced"
        raise _error(path, line, expected, remedy)
    if options.channels is not None:
        channels = [_named(path, header, line, name, "--channels") for name in options.channels]
        for name, i in zip(options.channels, channels, strict=True):
            if i in (ts, label):
                role = "time" if i == ts else "label"
                raise _error(path, line, f"--channels {name!r} is the {role} column; expected a channel")
        return _Columns(ts, [i for i in channels if i is not None], label)
    others = [i for i, name in enumerate(lower) if i not in (ts, label) and name not in LABEL_NAMES]
    if not others:
        raise _error(path, line, f"expected numeric channels besides timestamp and labels, got {header}")
    names = [header[i] for i in others]
    if len(set(names)) != len(names):
        raise _error(path, line, f"expected unique channel names, got {names}")
    return _Columns(ts, others, label)


def _named(path: Path, header: list[str], line: int, name: str | None, flag: str) -> int | None:
    """The column a flag names: exactly, else the one that matches ignoring case."""
    if name is None:
        return None
    if name in header:
        return header.index(name)
    folded = [i for i, column in enumerate(header) if column.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise _error(path, line, f"{flag} {name!r}: no such column; the file's columns are {header}")


def _expectations(header: list[str], cols: _Columns, unit: str) -> dict[int, str]:
    """What each column read should hold, for the message about a cell that does not."""
    out = {i: "a finite number" for i in cols.channels}
    if cols.timestamp is not None and unit != "period":
        out[cols.timestamp] = _TIMESTAMP_HINTS.get(unit, _TIMESTAMP_HINTS["iso"])
    if cols.label is not None:
        out[cols.label] = "a label 0 or 1"
    return {i: f"{text} in column {header[i]!r}" for i, text in out.items()}


def _check_policy(
    path: Path,
    header: list[str],
    cells: np.ndarray,
    lines: list[int],
    missing: np.ndarray,
    cols: _Columns,
    unit: str,
    options: ReadOptions,
) -> None:
    """Raise at the first cell the --missing policy rejects: fail rejects any; ffill fills only readings, over
    gaps of at most --ffill-limit rows that follow a reading; drop takes them all."""
    if options.missing == "drop":
        return
    expected = _expectations(header, cols, unit)
    # Under ffill, time and labels are never filled in: a reading can be repeated, a time or a label cannot.
    checked = sorted(c for c in expected if options.missing == "fail" or c not in cols.channels)
    bad = np.argwhere(missing[:, checked])
    if bad.size:
        r, c = int(bad[0][0]), checked[int(bad[0][1])]
        remedy = _MISSING_REMEDY if options.missing == "fail" else "--missing ffill fills readings, not time or labels"
        raise _error(path, lines[r], f"expected {expected[c]}, got {str(cells[r, c])!r}", remedy)
    drop = "--missing drop leaves such rows out"
    for c in cols.channels:
        for start, length in gaps(missing[:, c]):
            if start == 0:
                what = f"column {header[c]!r} has no reading on the first row to fill forward from"
                raise _error(path, lines[0], what, drop)
            if length > options.ffill_limit:
                what = (
                    f"column {header[c]!r} is missing on {length} consecutive rows (lines {lines[start]}-"
                    f"{lines[start + length - 1]}), more than --ffill-limit {options.ffill_limit}"
                )
                raise _error(path, lines[start], what, f"a larger --ffill-limit fills them; {drop}")
