"""The Sines benchmark of TimeGAN (NeurIPS 2019) and Diffusion-TS (ICLR 2024): windows whose every channel
is sin(f t + p) with f and p drawn uniformly from [0, 0.1] per window and channel, scaled to [0, 1]."""

from __future__ import annotations

import numpy as np

SINES_SAMPLES, SINES_WINDOW, SINES_CHANNELS = 10_000, 24, 5


def sines(
    n: int = SINES_SAMPLES, window: int = SINES_WINDOW, channels: int = SINES_CHANNELS, seed: int = 0
) -> np.ndarray:
    """(n, window, channels) float32 in [0, 1], as the papers' data loaders make them.

    >>> x = sines(3, seed=1)
    >>> x.shape, bool(x.min() >= 0.0), bool(x.max() <= 1.0)
    ((3, 24, 5), True, True)
    """
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.0, 0.1, size=(n, 1, channels))
    phase = rng.uniform(0.0, 0.1, size=(n, 1, channels))
    t = np.arange(window, dtype=np.float64)[None, :, None]
    return ((np.sin(freq * t + phase) + 1.0) * 0.5).astype(np.float32)
