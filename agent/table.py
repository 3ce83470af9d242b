"""Sensor tables: CSV files of a timestamp column, numeric channels and optional label columns."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgevae.core.errors import DataError

logger = logging.getLogger(__name__)

TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "ts", "date")
LABEL_NAMES = ("anomaly", "changepoint", "label")
# `changepoint` marks onsets only, so row labels come from the first of these that is present.
ROW_LABEL_NAMES = ("anomaly", "label")
_TIMESTAMP_HINT = "a timestamp (ISO-8601 such as 2020-02-08 13:30:47, naive = UTC, or epoch seconds)"


class TableError(DataError, ValueError):
    """A sensor table cannot be read; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class Table:
    path: str
    timestamps: np.ndarray  # (rows,) float64 epoch seconds
    values: np.ndarray  # (rows, channels) float64
    channels: tuple[str, ...]
    labels: np.ndarray | None  # (rows,) int8 0/1 from `anomaly` or `label`, if present
    # As the file wrote them, for outputs that keep the input's own columns (read_table fills these).
    timestamp_column: str = ""
    timestamp_text: np.ndarray | None = None  # (rows,) str
    label_column: str = ""

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


def read_table(path: str | Path) -> Table:
    path = Path(path)
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first header name.
    text = path.read_text(encoding="utf-8-sig")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] = []
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if not header:
            header, header_line = [cell.strip() for cell in row], reader.line_num
        elif len(row) != len(header):
            raise _error(path, reader.line_num, f"expected {len(header)} fields as in the header, got {len(row)}")
        else:
            rows.append(row)
            lines.append(reader.line_num)
    if not header:
        msg = f"{path}: empty file; expected a header line and data rows"
        raise TableError(msg)
    if not rows:
        raise _error(path, header_line, "expected data rows after the header, found none")

    lower = [name.lower() for name in header]
    ts_col = next((i for i, name in enumerate(lower) if name in TIMESTAMP_NAMES), 0)
    channel_cols = [i for i, name in enumerate(lower) if i != ts_col and name not in LABEL_NAMES]
    if not channel_cols:
        raise _error(path, header_line, f"expected numeric channels besides timestamp and labels, got {header}")
    channels = tuple(header[i] for i in channel_cols)
    if len(set(channels)) != len(channels):
        raise _error(path, header_line, f"expected unique channel names, got {list(channels)}")

    cells = np.array(rows, dtype=str)
    values = _numbers(cells[:, channel_cols], channels, path, lines, "a finite number")
    timestamps = _timestamps(cells[:, ts_col], header[ts_col], path, lines)
    labels = None
    label_col = next((lower.index(name) for name in ROW_LABEL_NAMES if name in lower), None)
    if label_col is not None:
        raw = _numbers(cells[:, [label_col]], (header[label_col],), path, lines, "a label 0 or 1")[:, 0]
        bad = np.flatnonzero((raw != 0) & (raw != 1))
        if bad.size:
            i = int(bad[0])
            got = rows[i][label_col]
            raise _error(path, lines[i], f"expected a label 0 or 1 in column {header[label_col]!r}, got {got!r}")
        labels = raw.astype(np.int8)
    logger.debug("read %s: %d rows, %d channels, labels=%s", path, len(rows), len(channels), labels is not None)
    label_name = header[label_col] if label_col is not None else ""
    # A copy: a view would keep every cell of the file alive with the table.
    return Table(str(path), timestamps, values, channels, labels, header[ts_col], cells[:, ts_col].copy(), label_name)


def read_tables(path: str | Path) -> list[Table]:
    """One file, or every *.csv under a folder (recursively), in sorted path order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.csv") if p.is_file())
        if not files:
            msg = f"{path}: expected a .csv file or a folder containing .csv files, found no .csv files"
            raise TableError(msg)
        return [read_table(p) for p in files]
    if not path.exists():
        msg = f"{path}: no such file or folder; expected a .csv file or a folder of them"
        raise FileNotFoundError(msg)
    return [read_table(path)]


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


def _error(path: Path, line: int, expected: str) -> TableError:
    return TableError(f"{path}: line {line}: {expected}")


def _numbers(cells: np.ndarray, names: tuple[str, ...], path: Path, lines: list[int], expected: str) -> np.ndarray:
    try:
        out = cells.astype(np.float64)
    except ValueError:
        out = None
    if out is not None and np.isfinite(out).all():
        return out
    # Slow path, only on failure: convert cell by cell so the message can name the bad cell's line and column.
    out = np.empty(cells.shape, dtype=np.float64)
    for (r, c), cell in np.ndenumerate(cells):
        try:
            out[r, c] = float(cell)
        except ValueError:
            out[r, c] = np.nan
        if not np.isfinite(out[r, c]):
            raise _error(path, lines[r], f"expected {expected} in column {names[c]!r}, got {str(cell)!r}")
    return out


def _timestamps(cells: np.ndarray, name: str, path: Path, lines: list[int]) -> np.ndarray:
    try:
        numeric = cells.astype(np.float64)
    except ValueError:
        numeric = None
    if numeric is not None and np.isfinite(numeric).all():
        return numeric
    out = np.empty(cells.shape[0], dtype=np.float64)
    for i, cell in enumerate(cells.tolist()):
        text = cell.strip()
        # datetime.fromisoformat before Python 3.11 rejects a trailing Z.
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise _error(path, lines[i], f"expected {_TIMESTAMP_HINT} in column {name!r}, got {cell!r}") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        out[i] = stamp.timestamp()
    return out
