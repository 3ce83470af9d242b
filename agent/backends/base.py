"""The interface every runtime backend satisfies: a batch of raw windows in, scores out."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np


class ScoreOutputs(NamedTuple):
    score: np.ndarray  # (batch,) float32
    channel_error: np.ndarray  # (batch, channels) float32


class Backend(Protocol):
    key: str

    def run(self, batch: np.ndarray) -> ScoreOutputs:
        """Score a float32 (batch, window, channels) array of raw readings."""
        ...

    def close(self) -> None:
        """Release the runtime; calling it twice is harmless."""
        ...
