"""Faults injected into normal windows, to ask a detector whether it would catch them (pure numpy).

Each fault changes one channel over the newest `span` rows of a window, by `magnitude` times that channel's
spread in the normal windows given (their standard deviation over all rows), so a fault means the same on
a thermocouple and on a flow meter:

- offset: a step of +magnitude std;
- spike: one row at +2 x magnitude std (a sensor glitch);
- drift: a ramp from 0 up to +magnitude std;
- noise: Gaussian noise of magnitude std.
"""

from __future__ import annotations

import numpy as np

FAULT_KINDS = ("offset", "spike", "drift", "noise")


def inject(
    windows: np.ndarray, kind: str, channel: int, magnitude: float, span: int, rng: np.random.Generator
) -> np.ndarray:
    """A copy of (n, window, channels) `windows` with the fault on `channel` over the last `span` rows.

    >>> w = np.zeros((1, 4, 2), dtype=np.float32); w[0, :, 0] = [0, 1, 0, 1]
    >>> inject(w, "offset", 0, 2.0, 2, np.random.default_rng(0))[0, :, 0].tolist()
    [0.0, 1.0, 1.0, 2.0]
    """
    if kind not in FAULT_KINDS:
        msg = f"fault kind must be one of {FAULT_KINDS}, got {kind!r}"
        raise ValueError(msg)
    n, rows, _ = windows.shape
    span = max(1, min(span, rows))
    out = windows.astype(np.float32, copy=True)
    std = float(windows[:, :, channel].std()) or 1.0
    size = magnitude * std
    target = out[:, rows - span :, channel]
    if kind == "offset":
        target += size
    elif kind == "spike":
        target[:, -1] += 2.0 * size
    elif kind == "drift":
        target += np.linspace(size / span, size, span, dtype=np.float32)
    else:
        target += rng.normal(0.0, size, size=target.shape).astype(np.float32)
    return out
