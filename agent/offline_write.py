"""The scores file of `edgevae score`, written a block of rows at a time.

One line per input row: the input's own timestamp and label columns as it wrote them (when it has them),
then `timestamp` in epoch seconds (Python's repr), the score, threshold and decision, each channel's error
(numbers as format(x, ".9g")). Lines are what csv.writer writes: comma-separated, \\r\\n-terminated, a field
quoted only when it holds a comma, a quote or a line break. Each window's fields are formatted once and
shared by the rows that carry it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

import numpy as np

from edgevae.agent.offline_stream import ScoredRows

_SPECIAL = (",", '"', "\r", "\n")  # what makes csv.writer quote a field (QUOTE_MINIMAL, the excel dialect)


def header(channels: tuple[str, ...], timestamp_column: str | None, label_column: str | None) -> list[str]:
    """The column names; an input column named like one of ours keeps its values under input_<name>."""
    ours = ["timestamp", "score", "threshold", "is_anomaly", *(f"error_{c}" for c in channels)]
    kept = [name for name in (timestamp_column, label_column) if name is not None]
    return [*(f"input_{name}" if name in ours else name for name in kept), *ours]


class ScoreWriter:
    """Writes the header at once, then `write` each block of scored rows in order."""

    def __init__(self, fh: TextIO, names: list[str], threshold: float, channels: int) -> None:
        self.fh = fh
        csv.writer(fh).writerow(names)
        self.threshold = format(threshold, ".9g")
        self.channels = channels
        # The fields of a row before the first window: no score, no errors, no alert.
        self.no_window = ",".join(["", self.threshold, "0", *[""] * channels])
        self._format = ",".join(["%.9g", self.threshold.replace("%", "%%"), "%d", *["%.9g"] * channels])

    def write(self, rows: ScoredRows) -> None:
        if not rows.rows:
            return
        columns: list[list[str]] = []
        if rows.timestamp_text is not None:
            columns.append(_fields(rows.timestamp_text))
        if rows.labels is not None:
            columns.append([str(v) for v in rows.labels.tolist()])
        columns.append(list(map(repr, rows.timestamps.tolist())))
        figures = np.column_stack([rows.scores, rows.alert_open, rows.channel_error.astype(np.float64)])
        fmt = self._format
        texts = np.array([self.no_window, *(fmt % tuple(f) for f in figures.tolist())], dtype=object)
        columns.append(texts[rows.window + 1].tolist())
        self.fh.write("\r\n".join(map(",".join, zip(*columns, strict=True))) + "\r\n")


def open_scores(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", newline="", encoding="utf-8")


def _fields(cells: list[str]) -> list[str]:
    """Cells as csv.writer writes them: most as they are, a few quoted."""
    joined = "\0".join(cells)
    if not any(c in joined for c in _SPECIAL):
        return cells
    return ['"' + c.replace('"', '""') + '"' if any(s in c for s in _SPECIAL) else c for c in cells]
