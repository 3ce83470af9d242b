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


def column_numbers(cells: list[str]) -> np.ndarray:
    """One column's cells as float64, read as `numbers` reads them (NaN where not a finite number).

    >>> column_numbers(["1", " 2.5 ", "", "inf"]).tolist()
    [1.0, 2.5, nan, nan]
    """
    try:
        out = np.array(cells, dtype=np.float64)
    except ValueError:
        out = np.array([_number(cell) for cell in cells], dtype=np.float64)
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
    if unit == "auto":
        unit = timestamp_unit(cells)
    if unit == "iso":
        return iso_seconds(cells), "iso"
    numeric = column_numbers(cells.tolist())
    return (numeric / 1000.0 if unit == "ms" else numeric), unit


def timestamp_unit(cells: np.ndarray) -> str:
    """How `auto` reads these (rows,) cells: s, ms or iso (see `timestamps`).

    >>> timestamp_unit(np.array(["1581168647", "1581168648", "x"])), timestamp_unit(np.array(["2020-02-08", ""]))
    ('s', 'iso')
    """
    numeric = numbers(cells[:, None])[:, 0]
    finite = np.isfinite(numeric)
    written = np.array([_written(cell) for cell in cells.tolist()], dtype=bool)
    # By the majority of the written cells, so that one bad cell is reported as such, not as the wrong unit.
    if 2 * np.count_nonzero(finite) <= np.count_nonzero(written):
        return "iso"
    return "ms" if np.median(np.abs(numeric[finite])) > MS_THRESHOLD else "s"


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


def iso_seconds(cells: np.ndarray) -> np.ndarray:
    """`timestamps(cells, "iso")`, with the common layouts read as arrays: YYYY-MM-DD, `T` or a space,
    HH:MM:SS, an optional fraction of 3 or 6 digits, and no offset, `Z` or +HH:MM / -HH:MM. Any other cell
    goes through datetime.fromisoformat, so every cell reads as that alone would read it.

    >>> iso_seconds(np.array(["2020-02-08 13:30:47", "2020-02-08T14:30:48.500+01:00", "", "08/02/2020"])).tolist()
    [1581168647.0, 1581168648.5, nan, nan]
    """
    out = np.full(len(cells), np.nan)
    fast = np.zeros(len(cells), dtype=bool)
    text = np.asarray(cells, dtype=str)
    if text.dtype.itemsize // 4 >= 19:
        fast, micros = _iso_layout(text)
        # Same as datetime.timestamp(): whole microseconds over 10**6, one correctly rounded division.
        out[fast] = micros[fast] / 1e6
    slow = np.flatnonzero(~fast)
    if len(slow):
        out[slow] = [_iso(cell) for cell in text[slow].tolist()]
    return out


def _iso_layout(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which cells are in the fast layout with valid fields, and their microseconds since the epoch."""
    rows = len(text)
    # Each cell as its code points, NUL-padded to 32 (the longest layout) so every position can be read.
    width = text.dtype.itemsize // 4
    codes = np.zeros((rows, max(width, 33)), dtype=np.int32)
    codes[:, :width] = np.ascontiguousarray(text).view(np.uint32).reshape(rows, width)
    digits = codes - ord("0")
    is_digit = (digits >= 0) & (digits <= 9)

    def field(start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(start, start + length)
        weights = 10 ** np.arange(length - 1, -1, -1, dtype=np.int64)
        valid = np.asarray(is_digit[:, span].all(axis=1))
        return digits[:, span] @ weights, valid

    (year, y_ok), (month, mo_ok), (day, d_ok) = field(0, 4), field(5, 2), field(8, 2)
    (hour, h_ok), (minute, mi_ok), (second, s_ok) = field(11, 2), field(14, 2), field(17, 2)
    ok = y_ok & mo_ok & d_ok & h_ok & mi_ok & s_ok
    ok &= (codes[:, 4] == ord("-")) & (codes[:, 7] == ord("-")) & np.isin(codes[:, 10], (ord("T"), ord(" ")))
    ok &= (codes[:, 13] == ord(":")) & (codes[:, 16] == ord(":"))
    # A fraction of exactly 3 or 6 digits after the seconds; the offset starts after it.
    dot = codes[:, 19] == ord(".")
    frac3, frac6 = field(20, 3)[1] & ~is_digit[:, 23], field(20, 6)[1] & ~is_digit[:, 26]
    ok &= ~dot | frac3 | frac6
    fraction = np.where(dot & frac6, field(20, 6)[0], np.where(dot & frac3, field(20, 3)[0] * 1000, 0))
    tz = np.where(dot, np.where(frac6, 26, 23), 19)
    at = codes[np.arange(rows)[:, None], tz[:, None] + np.arange(7)]
    sign = np.where(at[:, 0] == ord("-"), -1, 1)
    signed = np.isin(at[:, 0], (ord("+"), ord("-")))
    tz_digits = (at[:, [1, 2, 4, 5]] >= ord("0")) & (at[:, [1, 2, 4, 5]] <= ord("9"))
    offset_h = (at[:, 1] - ord("0")) * 10 + at[:, 2] - ord("0")
    offset_m = (at[:, 4] - ord("0")) * 10 + at[:, 5] - ord("0")
    offset_ok = signed & tz_digits.all(axis=1) & (at[:, 3] == ord(":")) & (at[:, 6] == 0)
    offset_ok &= (offset_h <= 23) & (offset_m <= 59)
    ok &= (at[:, 0] == 0) | np.isin(at[:, 0], (ord("Z"), ord("z"))) & (at[:, 1] == 0) | offset_ok
    offset = np.where(offset_ok, sign * (offset_h * 3600 + offset_m * 60), 0)
    # Years 1 and 9999 can leave datetime's range once the offset is applied: those take the slow path.
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)]
    ok &= (year >= 2) & (year <= 9998) & (month >= 1) & (month <= 12) & (day >= 1)
    ok &= (day <= month_days + (leap & (month == 2))) & (hour <= 23) & (minute <= 59) & (second <= 59)
    # Days since 1970-01-01 of the proleptic Gregorian date (the civil-from-days inverse, March-based years).
    y = year - (month <= 2)
    era, yoe = y // 400, y % 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    micros = (days * 86400 + hour * 3600 + minute * 60 + second - offset) * 1_000_000 + fraction
    # Beyond 2**53 (the year 2255) a float64 no longer holds every microsecond, and the division would round twice.
    return ok & (np.abs(micros) < 2**53), micros
