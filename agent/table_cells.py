"""The cells of a sensor table as numbers: readings, timestamps in epoch seconds, and gaps filled forward.

Text in, float64 out, NaN where a cell is not what was expected; the reader (`edgevae.agent.table`) decides
what a NaN means for the file.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

# Epoch seconds reach 1e11 in the year 5138; epoch milliseconds passed it in 1973.
MS_THRESHOLD = 1e11


def numbers(cells: np.ndarray) -> np.ndarray:
    """(rows, columns) text as float64; NaN where a cell is empty, NaN, infinite or not a number.

    >>> numbers(np.array([["1", " 2.5 "], ["", "x"]])).tolist()
    [[1.0, 2.5], [nan, nan]]
    """
    try:
        out = cells.astype(np.float64)
    except ValueError:
        # Slow path, only for a column that does not convert whole: cell by cell.
        out = np.empty(cells.shape, dtype=np.float64)
        for c in range(cells.shape[1]):
            try:
                out[:, c] = cells[:, c].astype(np.float64)
            except ValueError:
                out[:, c] = [_number(cell) for cell in cells[:, c].tolist()]
    out[~np.isfinite(out)] = np.nan
    return out


def timestamps(cells: np.ndarray, unit: str = "auto") -> tuple[np.ndarray, str]:
    """(rows,) text as epoch seconds, NaN where unreadable; and the unit read (s, ms or iso).

    `auto` reads a column of mostly numbers as epoch seconds, or as milliseconds when their median is above
    MS_THRESHOLD, and any other as ISO-8601 (naive times are UTC).

    >>> seconds, unit = timestamps(np.array(["1581168647000", "1581168648500"]))
    >>> seconds.tolist(), unit
    ([1581168647.0, 1581168648.5], 'ms')
    >>> seconds, unit = timestamps(np.array(["2020-02-08 13:30:47", "2020-02-08T14:30:48+01:00", ""]))
    >>> seconds.tolist(), unit
    ([1581168647.0, 1581168648.0, nan], 'iso')
    """
    if unit == "iso":
        return np.array([_iso(cell) for cell in cells.tolist()], dtype=np.float64), "iso"
    numeric = numbers(cells[:, None])[:, 0]
    finite = np.isfinite(numeric)
    if unit == "auto":
        written = np.array([_written(cell) for cell in cells.tolist()], dtype=bool)
        # By the majority of the written cells, so that one bad cell is reported as such, not as the wrong unit.
        if 2 * np.count_nonzero(finite) <= np.count_nonzero(written):
            return timestamps(cells, "iso")
        unit = "ms" if np.median(np.abs(numeric[finite])) > MS_THRESHOLD else "s"
    return (numeric / 1000.0 if unit == "ms" else numeric), unit


def gaps(missing: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a (rows,) mask.

    >>> gaps(np.array([False, True, True, False, True]))
    [(1, 2), (4, 1)]
    """
    edges = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(np.int8), [0]])))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def fill_forward(values: np.ndarray) -> np.ndarray:
    """Each NaN of a (rows, columns) array replaced by the last number above it in its column (NaN if none).

    >>> fill_forward(np.array([[1.0, np.nan], [np.nan, 2.0], [np.nan, np.nan]])).tolist()
    [[1.0, nan], [1.0, 2.0], [1.0, 2.0]]
    """
    rows = np.arange(values.shape[0])[:, None]
    source = np.maximum.accumulate(np.where(np.isnan(values), 0, rows), axis=0)
    out: np.ndarray = np.take_along_axis(values, source, axis=0)
    return out


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def _written(cell: str) -> bool:
    """A cell holds something, as opposed to the empty or NaN cells that stand for a missing value."""
    text = cell.strip().lower()
    return text not in ("", "nan")


def _iso(cell: str) -> float:
    text = cell.strip()
    # datetime.fromisoformat before Python 3.11 rejects a trailing Z.
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return float("nan")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()
