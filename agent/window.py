"""Windowing of multivariate readings: the offline form (all windows of an array) and the online form
(a per-device ring buffer that says when a window is due). Both use the same rule, so training, export,
offline scoring and the live agent see identical windows.

Rule: with window length W and stride S, the k-th window covers rows [k*S, k*S + W) of a stream.
"""

from __future__ import annotations

import numpy as np


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
    rows = values.shape[0]
    if rows < window:
        return np.empty((0, window, values.shape[1]), dtype=values.dtype)
    n = (rows - window) // stride + 1
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (rows-W+1, C, W)
    return view[::stride][:n].transpose(0, 2, 1)


def window_end_rows(rows: int, window: int, stride: int) -> np.ndarray:
    """Index of the last row of each window that `sliding_windows` returns for `rows` rows."""
    if rows < window:
        return np.empty(0, dtype=np.int64)
    n = (rows - window) // stride + 1
    return np.arange(n, dtype=np.int64) * stride + window - 1
