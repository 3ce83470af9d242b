"""A denoising diffusion model of sensor windows (DDPM, Ho et al. 2020) sampled with DDIM (Song et al. 2021).

Windows are scaled from [0, 1] to [-1, 1] inside, noised over `timesteps` steps of a cosine schedule
(Nichol & Dhariwal 2021), and a dilated 1-D conv denoiser conditioned on the step predicts the clean window
(x0) or the noise (eps). Sampling runs a deterministic DDIM (eta 0) over `ddim_steps` of those steps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgevae.training.generators import STATE_FILE, GeneratorMeta
from edgevae.training.generators.config import DEFAULT_DDIM_STEPS, PREDICTIONS
from edgevae.training.generators.nets import ResStack, position_features, seeded_noise, step_embedding, update_average


@dataclass
class DiffusionConfig:
    window: int
    channels: int
    hidden: int = 64
    blocks: int = 4
    timesteps: int = 500
    # eps by default, though Diffusion-TS predicts x0. On Sines (4,000 steps, docs/generators.md) x0 was closer
    # as a whole at 50 DDIM steps (MMD^2 0.0001 against 0.0007, discriminative 0.011 against 0.016) but its
    # windows miss the data's extremes (marginal distance 0.096 against 0.051): an x0 loss weighs every noise
    # level alike and pulls the noisiest steps' predictions to the mean. And x0 degrades faster with fewer DDIM
    # steps (autocorrelation error 0.040 against 0.009 at 10). A VAE trained on windows short of the normal
    # extremes would score real extremes as unusual (reasoned, not measured on a VAE), so eps; `--prediction x0`
    # is the other choice.
    prediction: str = "eps"
    positions: int = 0  # sin/cos features of the absolute time step added at the input (0: none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosine_alpha_bar(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """(timesteps,) cumulative signal share alpha_bar_t of the cosine schedule, t = 1..T, each beta <= 0.999."""
    f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


class Denoiser(nn.Module):
    """(B, C, L) noisy window and (B,) step -> (B, C, L) prediction (x0 or eps), any window length."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.embed_dim = h
        self.step_mlp = nn.Sequential(nn.Linear(h, 2 * h), nn.SiLU(), nn.Linear(2 * h, h))
        self.inp = nn.Conv1d(cfg.channels, h, 1)
        self.positions = cfg.positions
        self.pos = nn.Conv1d(cfg.positions, h, 1, bias=False) if cfg.positions else None
        self.stack = ResStack(h, cfg.blocks, cond_dim=h)
        last = nn.Conv1d(h, cfg.channels, 1, bias=False)
        # A zero last layer (no bias) starts every prediction at 0: the middle of the data in [-1, 1], or eps's mean.
        nn.init.zeros_(last.weight)
        self.out = nn.Sequential(nn.GroupNorm(min(8, h), h), nn.SiLU(), last)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = self.step_mlp(step_embedding(t, self.embed_dim))
        h = self.inp(x)
        if self.pos is not None:
            h = h + self.pos(position_features(x.shape[2], self.positions).unsqueeze(0))
        out: torch.Tensor = self.out(self.stack(h, cond))
        return out


class Diffusion(nn.Module):
    """The denoiser with its noise schedule (a buffer, so it travels with the weights)."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        if cfg.prediction not in PREDICTIONS:
            msg = f"prediction must be one of {PREDICTIONS}, got {cfg.prediction!r}"
            raise ValueError(msg)
        self.cfg = cfg
        self.denoiser = Denoiser(cfg)
        self.alpha_bar: torch.Tensor
        self.register_buffer("alpha_bar", cosine_alpha_bar(cfg.timesteps))

    def loss(self, x01: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Mean squared error of the prediction at a uniformly drawn step, for (B, L, C) windows in [0, 1]."""
        x0 = x01.transpose(1, 2) * 2 - 1
        t = torch.randint(0, self.cfg.timesteps, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        ab = self.alpha_bar[t][:, None, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        target = x0 if self.cfg.prediction == "x0" else eps
        return F.mse_loss(self.denoiser(xt, t), target)

    def ddim_schedule(self, steps: int) -> list[tuple[int, float, float]]:
        """The deterministic DDIM path over `steps` of the noising steps: (step t, alpha_bar_t, alpha_bar of the
        next step), from the noisiest step down to 0; the last entry's next alpha_bar is 1 (the clean window).
        Sampling in torch and the exported ONNX sampling loop both walk this list."""
        ts = torch.linspace(self.cfg.timesteps - 1, 0, steps).round().long().unique_consecutive().tolist()
        ab = [float(self.alpha_bar[t]) for t in ts]
        return list(zip(ts, ab, [*ab[1:], 1.0], strict=True))

    def ddim_step(
        self, x: torch.Tensor, t: torch.Tensor, ab: torch.Tensor, ab_next: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One deterministic DDIM step (eta 0) from (B, C, L) `x` at step `t` (a (B,) tensor): the next state
        and the clean window x0 the denoiser predicts, clamped to [-1, 1]."""
        pred = self.denoiser(x, t)
        x0 = pred if self.cfg.prediction == "x0" else (x - (1 - ab).sqrt() * pred) / ab.sqrt()
        x0 = x0.clamp(-1, 1)
        # Along the deterministic path through the predicted x0: the noise it implies, re-mixed at the next step.
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps, x0

    @torch.no_grad()
    def ddim(self, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, C, L) standard normal noise -> (B, L, C) windows in [0, 1], deterministic DDIM over `steps` steps."""
        x = x0 = noise
        for t, ab, ab_next in self.ddim_schedule(steps):
            step = torch.full((len(x),), t, dtype=torch.long)
            x, x0 = self.ddim_step(x, step, torch.tensor(ab), torch.tensor(ab_next))
        return ((x0 + 1) / 2).transpose(1, 2)


class DiffusionTrainer:
    """Adam on the denoising loss, with an exponential moving average of the weights that sampling uses."""

    def __init__(self, cfg: DiffusionConfig, lr: float, ema_decay: float, seed: int) -> None:
        self.model = Diffusion(cfg)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.ema_decay = ema_decay
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0

    def step(self, draw: Callable[[], torch.Tensor]) -> dict[str, float]:
        loss = self.model.loss(draw(), self.gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.steps += 1
        update_average(self.ema, self.model, self.ema_decay, self.steps)
        return {"loss": loss.item()}

    def state(self) -> dict[str, Any]:
        weights = self.ema if self.ema_decay > 0 else self.model
        return {"config": self.model.cfg.to_dict(), "state_dict": weights.state_dict()}


class DiffusionGenerator:
    """A trained diffusion model behind the Generator protocol; `steps` is the DDIM step count it samples with."""

    def __init__(self, meta: GeneratorMeta, model: Diffusion, steps: int) -> None:
        self.meta = meta
        self.model = model.eval()
        self.steps = steps

    def sample(
        self, n: int, seed: int = 0, batch: int = 1024, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """(n, window, channels) float32 in raw units; the same seed draws the same noise at any batch size."""
        cfg = self.model.cfg
        out = np.empty((n, cfg.window, cfg.channels), dtype=np.float32)
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            noise = seeded_noise(seed, start, stop, (cfg.channels, cfg.window))
            out[start:stop] = self.model.ddim(noise, self.steps).numpy()
            if on_batch is not None:
                on_batch(stop - start)
        return self.meta.scaler.unscale(out)


def load(run_dir: Path, steps: int | None = None) -> DiffusionGenerator:
    """The generator in `run_dir`, sampling with `steps` DDIM steps (default: those recorded at training)."""
    meta = GeneratorMeta.read(run_dir)
    # weights_only refuses pickled code, so a run folder from elsewhere cannot execute anything on load.
    state = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)
    model = Diffusion(DiffusionConfig(**state["config"]))
    model.load_state_dict(state["state_dict"])
    return DiffusionGenerator(meta, model, steps or int(meta.sampler.get("ddim_steps", DEFAULT_DDIM_STEPS)))
