"""What --missing does with the cells of a sensor table that hold no usable value, chunk by chunk.

fail rejects any such cell; drop leaves its row out; ffill repeats a channel's last reading over gaps of at
most --ffill-limit rows that follow a reading. The last reading and a gap still open at the end of a chunk
carry into the next one, so a file reads the same in chunks of any size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevae.agent.table_cells import fill_forward, gaps
from edgevae.agent.table_columns import Columns
from edgevae.agent.table_csv import CsvBlock, error
from edgevae.agent.table_options import ReadOptions

_TIMESTAMP_HINTS = {
    "s": "a timestamp in epoch seconds",
    "ms": "a timestamp in epoch milliseconds",
    "iso": "a timestamp (ISO-8601 such as 2020-02-08 13:30:47, naive = UTC, or epoch seconds or milliseconds)",
}
_MISSING_REMEDY = "--missing drop leaves such rows out; --missing ffill repeats a channel's last reading"
_DROP = "--missing drop leaves such rows out"


def expectations(header: list[str], cols: Columns, unit: str) -> dict[int, str]:
    """What each column read should hold, for the message about a cell that does not."""
    out = {i: "a finite number" for i in cols.channels}
    if cols.timestamp is not None and unit != "period":
        out[cols.timestamp] = _TIMESTAMP_HINTS.get(unit, _TIMESTAMP_HINTS["iso"])
    if cols.label is not None:
        out[cols.label] = "a label 0 or 1"
    return {i: f"{text} in column {header[i]!r}" for i, text in out.items()}


class MissingPolicy:
    """--missing over the chunks of one file, in order; `finish` after the last."""

    def __init__(self, path: Path, header: list[str], cols: Columns, unit: str, options: ReadOptions) -> None:
        self.path, self.header, self.cols, self.options = path, header, cols, options
        self.expected = expectations(header, cols, unit)
        # Under ffill, time and labels are never filled in: a reading can be repeated, a time or a label cannot.
        self.checked = sorted(c for c in self.expected if options.missing == "fail" or c not in cols.channels)
        channels = len(cols.channels)
        self.last = np.full(channels, np.nan)  # each channel's last reading, to fill the next chunk from
        # A gap still open at the end of the previous chunk, per channel: its first and last line, its rows.
        self.open_first = np.zeros(channels, dtype=np.int64)
        self.open_last = np.zeros(channels, dtype=np.int64)
        self.open_rows = np.zeros(channels, dtype=np.int64)
        self.rows = self.dropped = self.filled = 0

    def apply(
        self, block: CsvBlock, missing: np.ndarray | None, values: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The rows to keep (None: all) and the values with gaps filled; `missing` (rows, columns) marks the
        cells that hold no usable value (None: none do)."""
        lines = block.lines
        first_chunk = self.rows == 0
        self.rows += len(lines)
        if missing is None:
            self._close_all()
            self.last = values[-1]
            return None, values
        gappy = np.asarray(missing.any(axis=1))
        if self.options.missing == "drop":
            keep: np.ndarray = ~gappy
            self.dropped += int(np.count_nonzero(gappy))
            return keep, values
        bad = np.argwhere(missing[:, self.checked])
        if bad.size:
            r, c = int(bad[0][0]), self.checked[int(bad[0][1])]
            fail = self.options.missing == "fail"
            remedy = _MISSING_REMEDY if fail else "--missing ffill fills readings, not time or labels"
            raise error(self.path, int(lines[r]), f"expected {self.expected[c]}, got {block.cell(r, c)!r}", remedy)
        self._check_gaps(missing[:, self.cols.channels], lines, first_chunk)
        filled = fill_forward(np.vstack([self.last[None, :], values]))[1:]
        self.last = filled[-1]
        self.filled += int(np.count_nonzero(gappy))
        return None, filled

    def finish(self) -> None:
        """A gap that ran to the end of the file is checked against the limit here."""
        self._close_all()

    def _check_gaps(self, missing: np.ndarray, lines: np.ndarray, first_chunk: bool) -> None:
        rows = len(lines)
        for j in range(missing.shape[1]):
            runs = gaps(missing[:, j])
            if self.open_rows[j] and (not runs or runs[0][0] != 0):
                self._close(j)
            for start, length in runs:
                if start == 0 and first_chunk:
                    what = f"column {self._name(j)!r} has no reading on the first row to fill forward from"
                    raise error(self.path, int(lines[0]), what, _DROP)
                if start == 0 and self.open_rows[j]:
                    self.open_rows[j] += length
                else:
                    self.open_first[j], self.open_rows[j] = lines[start], length
                self.open_last[j] = lines[start + length - 1]
                if start + length < rows:
                    self._close(j)

    def _close_all(self) -> None:
        for j in np.flatnonzero(self.open_rows).tolist():
            self._close(j)

    def _close(self, j: int) -> None:
        length = int(self.open_rows[j])
        self.open_rows[j] = 0
        if length > self.options.ffill_limit:
            first, last = int(self.open_first[j]), int(self.open_last[j])
            what = (
                f"column {self._name(j)!r} is missing on {length} consecutive rows (lines {first}-{last}), "
                f"more than --ffill-limit {self.options.ffill_limit}"
            )
            raise error(self.path, first, what, f"a larger --ffill-limit fills them; {_DROP}")

    def _name(self, j: int) -> str:
        return self.header[self.cols.channels[j]]
