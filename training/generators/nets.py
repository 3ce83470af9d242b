"""Building blocks shared by the generators: dilated residual 1-D conv blocks over (batch, width, time), the
sinusoidal step embedding, seeded noise that does not depend on the sampling batch size, and the moving
average of weights that both kinds sample with."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# Dilations cycle through these: four blocks see 1 + 4 * (1 + 2 + 4 + 8) = 61 steps, more than a window of 24
# needs, and every further cycle adds 60; the mean-pooled context gives each block the whole window anyway.
DILATIONS = (1, 2, 4, 8)
NOISE_BLOCK = 256  # windows per independently seeded block of sampling noise


class ResBlock(nn.Module):
    """x + conv(act(conv(act(norm(x))))), with an optional FiLM conditioning (scale, shift) from a vector.

    The block also adds a projection of the window's mean over time, so a window-level property (a sine's
    frequency, a plant's operating point) reaches every time step whatever the window length.
    """

    def __init__(self, width: int, dilation: int, cond_dim: int = 0, norm: bool = True) -> None:
        super().__init__()
        self.norm: nn.Module = nn.GroupNorm(min(8, width), width) if norm else nn.Identity()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.context = nn.Linear(width, width)
        self.film = nn.Linear(cond_dim, 2 * width) if cond_dim else None
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.norm(x))
        h = self.conv1(h) + self.context(h.mean(dim=2)).unsqueeze(2)
        if self.film is not None:
            assert cond is not None
            scale, shift = self.film(cond).unsqueeze(2).chunk(2, dim=1)
            h = h * (1 + scale) + shift
        out: torch.Tensor = x + self.conv2(self.act(h))
        return out


class ResStack(nn.Module):
    """`blocks` ResBlocks of `width`, dilations cycling through DILATIONS."""

    def __init__(self, width: int, blocks: int, cond_dim: int = 0, norm: bool = True) -> None:
        super().__init__()
        dilations = [DILATIONS[i % len(DILATIONS)] for i in range(blocks)]
        self.blocks = nn.ModuleList(ResBlock(width, d, cond_dim, norm) for d in dilations)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


def step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer diffusion steps -> (B, dim) sin/cos features at geometric frequencies (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def position_features(length: int, dim: int) -> torch.Tensor:
    """(dim, length) sin/cos features of the absolute time step 0..length-1 (the transformer's position
    encoding): a conv stack sees only relative offsets, and a window's shape can depend on where in the
    window a step lies (every Sines window starts near its phase)."""
    return step_embedding(torch.arange(length), dim).T


def seeded_noise(seed: int, start: int, stop: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise for windows start..stop-1 of a sample drawn with `seed`, shape (stop-start, *shape).

    Window i's noise comes from block i // NOISE_BLOCK, each block from its own generator, so a sample starts
    from the same noise whatever batch size it is drawn in, and its first k windows from that of a smaller one.
    """
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    parts = []
    for block in range(first, last + 1):
        block_seed = int(np.random.SeedSequence([seed, block]).generate_state(1, dtype=np.uint64)[0] >> 1)
        parts.append(torch.randn((NOISE_BLOCK, *shape), generator=torch.Generator().manual_seed(block_seed)))
    offset = first * NOISE_BLOCK
    return torch.cat(parts)[start - offset : stop - offset]


@torch.no_grad()
def update_average(average: nn.Module, live: nn.Module, decay: float, step: int) -> None:
    """Move `average`'s weights towards `live`'s: an exponential moving average, after `step` (from 1) updates.

    The decay ramps up as min(decay, (1 + step) / (10 + step)), so that a short run's average is not mostly
    its random initialization: at 0.999 the starting weights would still weigh 74 % after 300 steps.
    """
    rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
    for avg, param in zip(average.parameters(), live.parameters(), strict=True):
        avg.lerp_(param, rate)
