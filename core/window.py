"""Windowing of multivariate readings: the offline form (all windows of an array) and the online form
(a per-device ring buffer that says when a window is due). Both use the same rule, so training, export,
offline scoring and the live agent see identical windows.

Rule: with window length W and stride S, the k-th window covers rows [k*S, k*S + W) of a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowBlock:
    """Windows completed by a block of readings: (k, window, channels) float32, the timestamps of each
    one's first and last reading, and the index in the block of the reading that completed it."""

    windows: np.ndarray
    start_ts: np.ndarray
    end_ts: np.ndarray
    ends: np.ndarray


def window_count(rows: int, window: int, stride: int) -> int:
    """How many windows of the rule fit in `rows` rows: 0 when there are fewer rows than one window.

    >>> [window_count(rows, window=3, stride=2) for rows in range(7)]
    [0, 0, 0, 1, 1, 2, 2]
    """
    return 0 if rows < window else (rows - window) // stride + 1


def sliding_windows(values: np.ndarray, window: int, stride: int) -> np.ndarray:
    """All windows of a (rows, channels) array as (n_windows, window, channels), without copying.

    >>> sliding_windows(np.arange(10.0).reshape(5, 2), window=3, stride=2)[:, :, 0]
    array([[0., 2., 4.],
           [4., 6., 8.]])
    """
    if values.ndim != 2:
        msg = f"expected a (rows, channels) array, got shape {values.shape}"
        raise ValueError(msg)
    if window < 1 or stride < 1:
        msg = f"window and stride must be >= 1, got window={window} stride={stride}"
        raise ValueError(msg)
    n = window_count(values.shape[0], window, stride)
    if n == 0:
        return np.empty((0, window, values.shape[1]), dtype=values.dtype)
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (rows-W+1, C, W)
    windows: np.ndarray = view[::stride][:n].transpose(0, 2, 1)
    return windows


def window_end_rows(rows: int, window: int, stride: int) -> np.ndarray:
    """Index of the last row of each window that `sliding_windows` returns for `rows` rows."""
    return np.arange(window_count(rows, window, stride), dtype=np.int64) * stride + window - 1


class OnlineWindow:
    """One stream's ring buffer: `push` a reading, and every `stride` readings once full a window is due.

    Windows follow the rule of `sliding_windows`, counted from the first reading or the last `reset`.

    >>> w = OnlineWindow(window=3, stride=2, channels=1)
    >>> [w.push(float(t), np.array([t])) for t in range(5)]
    [False, False, True, False, True]
    >>> w.window()[:, 0]
    array([2., 3., 4.], dtype=float32)
    """

    def __init__(self, window: int, stride: int, channels: int) -> None:
        if window < 1 or stride < 1:
            msg = f"window and stride must be >= 1, got window={window} stride={stride}"
            raise ValueError(msg)
        self.size = window
        self.stride = stride
        # Every row is written twice, at i and i + window, so the last `window` rows are always one
        # contiguous slice and a window costs a single copy.
        self._rows = np.zeros((2 * window, channels), dtype=np.float32)
        self._ts = np.zeros(2 * window, dtype=np.float64)
        self._pos = 0
        self.count = 0  # readings since the last reset
        self.last_ts: float | None = None

    def reset(self) -> None:
        self._pos = 0
        self.count = 0
        self.last_ts = None

    def push(self, ts: float, values: np.ndarray) -> bool:
        """Add one reading; True when it completes a window."""
        pos, size = self._pos, self.size
        self._rows[pos] = values
        self._rows[pos + size] = values
        self._ts[pos] = ts
        self._ts[pos + size] = ts
        self._pos = (pos + 1) % size
        self.count += 1
        self.last_ts = ts
        return self.count >= size and (self.count - size) % self.stride == 0

    def reorder(self, order: list[int]) -> None:
        """Put the buffered readings' columns in another order: new column j is old column order[j]."""
        self._rows = self._rows[:, order]

    def window(self) -> np.ndarray:
        """A copy of the last `window` readings, oldest first, as (window, channels) float32."""
        out: np.ndarray = self._rows[self._pos : self._pos + self.size].copy()
        return out

    def span(self) -> tuple[float, float]:
        """Timestamps of the first and last reading of the current window."""
        return float(self._ts[self._pos]), float(self._ts[self._pos + self.size - 1])

    def push_block(self, ts: np.ndarray, values: np.ndarray) -> WindowBlock:
        """Add readings (n,) at `ts` with (n, channels) `values` at once: the windows they complete, as
        `push` one by one would have given them, and the buffer left as it would have left it.

        >>> w = OnlineWindow(window=3, stride=2, channels=1)
        >>> got = w.push_block(np.arange(5.0), np.arange(5.0)[:, None])
        >>> got.windows[:, :, 0].tolist(), got.ends.tolist(), w.window()[:, 0].tolist()
        ([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]], [2, 4], [2.0, 3.0, 4.0])
        """
        size, m = self.size, len(ts)
        if m == 0:
            return WindowBlock(np.empty((0, size, self._rows.shape[1]), np.float32), np.empty(0), np.empty(0),
                               np.empty(0, np.int64))  # fmt: skip
        kept = min(self.count, size - 1)  # buffered rows a window ending in the block can reach back to
        oldest = self._pos + size - kept
        rows = np.concatenate([self._rows[oldest : self._pos + size], values.astype(np.float32, copy=False)])
        stamps = np.concatenate([self._ts[oldest : self._pos + size], ts])
        # Row e of `rows` is reading number count - kept + e + 1 since the reset; a window is due on reading c
        # when c >= size and (c - size) % stride == 0.
        first = self.count - kept + 1
        counts = np.arange(first + kept, first + kept + m)
        due = (counts >= size) & ((counts - size) % self.stride == 0)
        ends = np.flatnonzero(due) + kept  # rows of `rows` that end a window
        if len(ends):
            view = np.lib.stride_tricks.sliding_window_view(rows, size, axis=0)  # (rows - size + 1, C, size)
            windows = np.ascontiguousarray(view[ends - size + 1].transpose(0, 2, 1))
        else:
            windows = np.empty((0, size, rows.shape[1]), dtype=np.float32)
        block = WindowBlock(windows, stamps[ends - size + 1], stamps[ends], ends - kept)
        self.count += m
        self._pos = (self._pos + m) % size
        tail = min(self.count, size)
        slots = (self._pos - tail + np.arange(tail)) % size
        for offset in (0, size):
            self._rows[slots + offset] = rows[-tail:]
            self._ts[slots + offset] = stamps[-tail:]
        self.last_ts = float(ts[-1])
        return block
