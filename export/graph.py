"""The scoring graph that ships: raw windows in, per-window score and per-channel error out."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from edgevae.training.losses import gaussian_nll
from edgevae.training.models.vae import WindowVAE

SCORE_KINDS = {"mse": "mse", "gaussian": "nll"}  # model likelihood -> manifest score_kind


class GraphOutputs(NamedTuple):
    score: torch.Tensor  # (batch,)
    channel_error: torch.Tensor  # (batch, channels)


# The ONNX output names are the NamedTuple's fields (export/onnx.py); tests pin them to the agent's names.
OUTPUT_NAMES: tuple[str, ...] = GraphOutputs._fields


class ScoringGraph(nn.Module):
    """A trained WindowVAE with its normalization, scoring raw (batch, time, channel) windows deterministically.

    `channel_error` is the mean over the newest `score_rows` rows of the squared error in normalized units.
    `score` is its mean over channels (score_kind "mse"), or the mean Gaussian negative log-likelihood per
    point of those rows when the decoder predicts a variance (score_kind "nll").

    The whole window is the model's context, but only its newest rows are scored: a window's score then
    speaks for the rows that just arrived, and an alert ends soon after a fault does instead of lasting
    until the fault has left the window. `score_rows=None` scores the whole window.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        vae: WindowVAE,
        mean: np.ndarray | torch.Tensor,
        std: np.ndarray | torch.Tensor,
        score_rows: int | None = None,
    ) -> None:
        super().__init__()
        channels = vae.cfg.channels
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() != channels or std_t.numel() != channels:
            msg = f"expected mean and std with {channels} values, got {mean_t.numel()} and {std_t.numel()}"
            raise ValueError(msg)
        if not bool(torch.all(std_t > 0)) or not bool(torch.all(torch.isfinite(mean_t))):
            msg = f"expected finite mean and std > 0 per channel, got mean={mean_t.tolist()} std={std_t.tolist()}"
            raise ValueError(msg)
        self.vae = vae.eval()
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.score_kind = SCORE_KINDS[vae.cfg.likelihood]
        self.score_rows = score_rows or vae.cfg.window

    @property
    def score_rows(self) -> int:
        return self._score_rows

    @score_rows.setter
    def score_rows(self, rows: int) -> None:
        if not 1 <= rows <= self.window:
            msg = f"score_rows must be between 1 and the window ({self.window}), got {rows}"
            raise ValueError(msg)
        self._score_rows = rows

    @property
    def window(self) -> int:
        return int(self.vae.cfg.window)

    @property
    def channels(self) -> int:
        return int(self.vae.cfg.channels)

    def forward(self, window: torch.Tensor) -> GraphOutputs:
        x = (window - self.mean) / self.std
        mu, _ = self.vae.encode(x)
        # The posterior mean, not a sample: the same window must always get the same score.
        recon, recon_logvar = self.vae.decode(mu)
        newest = slice(self.window - self.score_rows, self.window)
        squared = (x[:, newest] - recon[:, newest]) ** 2
        channel_error = squared.mean(dim=1)
        if recon_logvar is None:
            score = channel_error.mean(dim=1)
        else:
            score = gaussian_nll(squared, recon_logvar[:, newest]).mean(dim=(1, 2))
        return GraphOutputs(score, channel_error)
