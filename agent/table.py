"""Sensor tables: CSV files of a timestamp column, numeric channels and optional label columns.

`read_table` is the one reader of every command; `ReadOptions` (edgevae.agent.table_options) say which
column is time, which are channels and labels, and what a missing cell means.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgevae.agent.table_columns import LABEL_NAMES as LABEL_NAMES  # re-exported: the names are part of the API
from edgevae.agent.table_columns import ROW_LABEL_NAMES as ROW_LABEL_NAMES
from edgevae.agent.table_columns import TIMESTAMP_NAMES as TIMESTAMP_NAMES
from edgevae.agent.table_csv import TableError as TableError  # re-exported: readers catch it from here
from edgevae.agent.table_csv import csv_paths
from edgevae.agent.table_options import ReadOptions
from edgevae.agent.table_stream import DEFAULT_READ as DEFAULT_READ
from edgevae.agent.table_stream import TableChunk, TableStream


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


def read_table(path: str | Path, options: ReadOptions = DEFAULT_READ) -> Table:
    """The whole table in memory: the chunks of `TableStream`, joined (`edgevae score` scores them one by one)."""
    stream = TableStream(path, options)
    chunks = list(stream)
    return table_of(stream, chunks)


def table_of(stream: TableStream, chunks: list[TableChunk]) -> Table:
    """The table of a stream's chunks, once the stream has been read."""

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    labels = [c.labels for c in chunks if c.labels is not None]
    text = [cell for c in chunks if c.timestamp_text is not None for cell in c.timestamp_text]
    return Table(
        str(stream.path),
        joined([c.timestamps for c in chunks]),
        joined([c.values for c in chunks]),
        stream.channels,
        joined(labels) if labels else None,
        stream.timestamp_column,
        np.array(text, dtype=str) if stream.columns.timestamp is not None else None,
        stream.label_column,
        rows_dropped=stream.rows_dropped,
        rows_filled=stream.rows_filled,
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
