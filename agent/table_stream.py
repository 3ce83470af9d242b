"""A sensor table read in chunks of rows, so a file of any length is read in bounded memory.

`TableStream(path, options)` reads the header and finds the columns at once (raising as `read_table` does
for a bad header), then yields `TableChunk`s. Every chunk is read as the whole file would be:

- `auto` time is decided once, from the first UNIT_SAMPLE_ROWS rows, and every chunk is read in that unit
  (the whole-file reader decided from every row: the same unless the column changes kind further down);
- --period stamps count rows from the top of the file, so a row left out keeps its slot;
- --missing ffill fills from the last reading of an earlier chunk, and its limit counts a gap across chunks.

A file with a fault in a later chunk raises when that chunk is read, after the earlier ones were yielded.
With several faults, the first in file order is named, except that a gap longer than --ffill-limit is
named when it ends; the whole-file reader named the faults of the first column first.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevae.agent.table_cells import column_numbers, iso_seconds, timestamp_unit
from edgevae.agent.table_columns import find_columns
from edgevae.agent.table_csv import CsvBlock, CsvBlocks, error
from edgevae.agent.table_options import ReadOptions
from edgevae.agent.table_policy import MissingPolicy

# The reader's messages keep the name users filter on, whichever module writes them.
logger = logging.getLogger("edgevae.agent.table")

# Small enough that the first chunk is scored soon after the command starts, large enough that a chunk's
# fixed costs do not count.
CHUNK_ROWS = 16_384
# Rows that decide an `auto` time column's unit, whatever the chunk size: a file reads the same in any chunks.
UNIT_SAMPLE_ROWS = 8_192
DEFAULT_READ = ReadOptions()


@dataclass(frozen=True)
class TableChunk:
    """Consecutive rows of a table, after --missing: the arrays of `Table`, for these rows only."""

    start: int  # the table row of the first row here (rows left out by --missing drop are not counted)
    timestamps: np.ndarray  # (rows,) float64 epoch seconds
    values: np.ndarray  # (rows, channels) float64
    labels: np.ndarray | None  # (rows,) int8
    timestamp_text: list[str] | None  # as the file wrote them

    @property
    def rows(self) -> int:
        return len(self.timestamps)


class TableStream:
    """Iterate once for the chunks; the counts (`rows_read`, `rows_dropped`, `rows_filled`) are final after."""

    def __init__(self, path: str | Path, options: ReadOptions = DEFAULT_READ, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = Path(path)
        self.options = options
        self._csv = CsvBlocks(self.path, chunk_rows)
        header = self._csv.header
        try:
            self.columns = find_columns(self.path, header, self._csv.header_line, options)
        except BaseException:
            self._csv.close()
            raise
        cols = self.columns
        self.channels = tuple(header[i] for i in cols.channels)
        self.timestamp_column = header[cols.timestamp] if cols.timestamp is not None else ""
        self.label_column = header[cols.label] if cols.label is not None else ""
        self.unit = "period" if cols.timestamp is None or options.period is not None else options.timestamp_unit
        self.rows_read = 0  # data rows of the file, before --missing
        self.rows_kept = 0
        self._policy: MissingPolicy | None = None

    @property
    def rows_dropped(self) -> int:
        return 0 if self._policy is None else self._policy.dropped

    @property
    def rows_filled(self) -> int:
        return 0 if self._policy is None else self._policy.filled

    def close(self) -> None:
        self._csv.close()

    def __iter__(self) -> Iterator[TableChunk]:
        try:
            blocks = self._csv.blocks()
            ahead: list[CsvBlock] = []
            if self.unit == "auto":
                assert self.columns.timestamp is not None
                for block in blocks:
                    ahead.append(block)
                    if sum(b.rows for b in ahead) >= UNIT_SAMPLE_ROWS:
                        break
                sample = [cell for b in ahead for cell in b.column(self.columns.timestamp)]
                self.unit = timestamp_unit(np.array(sample[:UNIT_SAMPLE_ROWS], dtype=str))
            self._policy = MissingPolicy(self.path, self._csv.header, self.columns, self.unit, self.options)
            for block in _chain(ahead, blocks):
                chunk = self._chunk(block)
                if chunk.rows:
                    yield chunk
            self._policy.finish()
        finally:
            self._csv.close()
        self._finish()

    def _chunk(self, block: CsvBlock) -> TableChunk:
        assert self._policy is not None
        cols, options, rows = self.columns, self.options, block.rows
        values = np.empty((rows, len(cols.channels)))
        for j, c in enumerate(cols.channels):
            values[:, j] = column_numbers(block.column(c))
        text = None if cols.timestamp is None else block.column(cols.timestamp)
        if self.unit == "period":
            assert options.period is not None
            # From the row's place in the file, so a row dropped below leaves its slot empty.
            stamps = np.arange(self.rows_read, self.rows_read + rows, dtype=np.float64) * options.period
        elif self.unit == "iso":
            stamps = iso_seconds(np.array(text, dtype=str))
        else:
            assert text is not None
            stamps = column_numbers(text) / (1000.0 if self.unit == "ms" else 1.0)
        self.rows_read += rows
        labels = None
        if cols.label is not None:
            labels = column_numbers(block.column(cols.label))
            wrong = np.flatnonzero(np.isfinite(labels) & (labels != 0) & (labels != 1))
            if wrong.size:
                i = int(wrong[0])
                expected = f"expected a label 0 or 1 in column {self._csv.header[cols.label]!r}"
                raise error(self.path, int(block.lines[i]), f"{expected}, got {block.cell(i, cols.label)!r}")
        # Per row and column of the file, the cells that hold no usable value.
        missing = np.zeros((rows, block.width), dtype=bool)
        missing[:, cols.channels] = np.isnan(values)
        if self.unit != "period":
            missing[:, cols.timestamp] = np.isnan(stamps)
        if labels is not None:
            missing[:, cols.label] = np.isnan(labels)
        keep, values = self._policy.apply(block, missing if missing.any() else None, values)
        if keep is not None:
            stamps, values = stamps[keep], values[keep]
            labels = None if labels is None else labels[keep]
            text = None if text is None else list(itertools.compress(text, keep.tolist()))
        start, self.rows_kept = self.rows_kept, self.rows_kept + len(stamps)
        return TableChunk(start, stamps, values, None if labels is None else labels.astype(np.int8), text)

    def _finish(self) -> None:
        assert self._policy is not None
        if self.rows_kept == 0:
            expected = f"expected rows with every cell read, but all {self.rows_read} have a gap"
            raise error(self.path, self._csv.header_line, expected)
        if self.rows_dropped:
            logger.info(
                "%s: dropped %d of %d rows with a missing or non-numeric cell",
                self.path,
                self.rows_dropped,
                self.rows_read,
            )
        if self.rows_filled:
            logger.info(
                "%s: forward-filled a missing reading in %d of %d rows", self.path, self.rows_filled, self.rows_read
            )
        logger.debug("read %s: %d rows, %d channels, time %s", self.path, self.rows_read, len(self.channels), self.unit)


def _chain(ahead: list[CsvBlock], rest: Iterator[CsvBlock]) -> Iterator[CsvBlock]:
    while ahead:
        yield ahead.pop(0)  # handed on one by one, so each read-ahead block is freed once read
    yield from rest
