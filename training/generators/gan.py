"""A Wasserstein GAN with gradient penalty (WGAN-GP, Gulrajani et al. 2017) of sensor windows in [0, 1].

The generator maps a noise sequence (one vector per time step) plus one window-level noise vector through
dilated 1-D conv residual blocks to a window; the critic is the same kind of stack pooled over time to a
score. Neither uses batch norm: the gradient penalty is per sample, and batch statistics would couple them.

Training is the paper's (five critic updates per generator update, Adam at 1e-4 with betas (0, 0.9)), and
sampling uses a moving average of the generator's weights, as ProGAN and StyleGAN do: docs/generators.md
has the measurements.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgevae.training.generators import STATE_FILE, GeneratorMeta
from edgevae.training.generators.nets import ResStack, position_features, seeded_noise, update_average


@dataclass
class GANConfig:
    window: int
    channels: int
    hidden: int = 64
    blocks: int = 4
    noise_dim: int = 8  # noise channels per time step
    global_noise_dim: int = 16  # one noise vector per window, broadcast over time
    positions: int = 0  # sin/cos features of the absolute time step into generator and critic (0: none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def noise_shape(self) -> tuple[int, int]:
        """Noise per window: (noise_dim + global_noise_dim, window); the global part is read at step 0."""
        return self.noise_dim + self.global_noise_dim, self.window


class WindowGenerator(nn.Module):
    """(B, noise_dim + global_noise_dim, L) noise -> (B, L, C) windows in [0, 1]."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.seq_in = nn.Conv1d(cfg.noise_dim, h, 1)
        self.global_in = nn.Linear(cfg.global_noise_dim, h)
        self.pos = nn.Conv1d(cfg.positions, h, 1, bias=False) if cfg.positions else None
        self.stack = ResStack(h, cfg.blocks, cond_dim=h, norm=False)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv1d(h, cfg.channels, 1))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        seq, glob = noise[:, : self.cfg.noise_dim], noise[:, self.cfg.noise_dim :, 0]
        g = self.global_in(glob)
        # The window-level vector enters twice: added to every step and as FiLM conditioning of each block.
        h = self.seq_in(seq) + g.unsqueeze(2)
        if self.pos is not None:
            h = h + self.pos(position_features(seq.shape[2], self.cfg.positions).unsqueeze(0))
        out: torch.Tensor = torch.sigmoid(self.out(self.stack(h, g)))
        return out.transpose(1, 2)


class Critic(nn.Module):
    """(B, L, C) windows -> (B,) scores, higher for windows that look real.

    Strided convs halve the time axis down to a few steps (DCGAN-style), then mean and max pooling give a
    score for any window length. Downsampling makes it about six times cheaper than a full-resolution stack,
    which matters: every generator step costs `n_critic` critic updates, each with a double backward.
    """

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.positions = cfg.positions
        layers: list[nn.Module] = [nn.Conv1d(cfg.channels + cfg.positions, h, 3, padding=1), nn.LeakyReLU(0.2)]
        length = cfg.window
        while length > 4:
            layers += [nn.Conv1d(h, h, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            length //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.positions:
            pos = position_features(x.shape[2], self.positions).unsqueeze(0).expand(len(x), -1, -1)
            x = torch.cat([x, pos], dim=1)
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        out: torch.Tensor = self.head(pooled).squeeze(1)
        return out


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] on random points x_hat between real and fake windows."""
    mix = torch.rand((len(real), 1, 1), generator=gen)
    x_hat = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    penalty: torch.Tensor = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    return penalty


class GANTrainer:
    """One step: `n_critic` critic updates on fresh real batches, then one generator update.

    Sampling uses an exponential moving average of the generator's weights: the last weights chase the
    critic's latest opinion, and their average lies closer to the data (docs/generators.md).
    """

    def __init__(
        self, cfg: GANConfig, lr: float, critic_lr: float, n_critic: int, gp_weight: float, ema_decay: float, seed: int
    ) -> None:
        self.cfg = cfg
        self.generator = WindowGenerator(cfg)
        self.critic = Critic(cfg)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.ema_decay = ema_decay
        # Adam(beta1 0, beta2 0.9) as the WGAN-GP paper: momentum fights the critic's moving target.
        self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.0, 0.9))
        self.c_opt = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, betas=(0.0, 0.9))
        self.n_critic, self.gp_weight = n_critic, gp_weight
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn((n, *self.cfg.noise_shape), generator=self.gen)

    def step(self, draw: Callable[[], torch.Tensor]) -> dict[str, float]:
        for _ in range(self.n_critic):
            real = draw()
            with torch.no_grad():
                fake = self.generator(self._noise(len(real)))
            wasserstein = self.critic(real).mean() - self.critic(fake).mean()
            penalty = gradient_penalty(self.critic, real, fake, self.gen)
            critic_loss = -wasserstein + self.gp_weight * penalty
            self.c_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.c_opt.step()
        generator_loss = -self.critic(self.generator(self._noise(len(real)))).mean()
        self.g_opt.zero_grad(set_to_none=True)
        generator_loss.backward()
        self.g_opt.step()
        self.steps += 1
        update_average(self.ema, self.generator, self.ema_decay, self.steps)
        # The critic's estimate of the Wasserstein distance is the figure that tracks sample quality.
        return {"wasserstein": wasserstein.item(), "critic": critic_loss.item(), "generator": generator_loss.item()}

    def state(self) -> dict[str, Any]:
        # The critic is only needed to train; the run folder keeps what sampling needs.
        weights = self.ema if self.ema_decay > 0 else self.generator
        return {"config": self.cfg.to_dict(), "state_dict": weights.state_dict()}


class GANGenerator:
    """A trained WGAN-GP generator behind the Generator protocol."""

    def __init__(self, meta: GeneratorMeta, model: WindowGenerator) -> None:
        self.meta = meta
        self.model = model.eval()

    @torch.no_grad()
    def sample(
        self, n: int, seed: int = 0, batch: int = 1024, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """(n, window, channels) float32 in raw units; the same seed draws the same noise at any batch size."""
        cfg = self.model.cfg
        out = np.empty((n, cfg.window, cfg.channels), dtype=np.float32)
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            out[start:stop] = self.model(seeded_noise(seed, start, stop, cfg.noise_shape)).numpy()
            if on_batch is not None:
                on_batch(stop - start)
        return self.meta.scaler.unscale(out)


def load(run_dir: Path) -> GANGenerator:
    meta = GeneratorMeta.read(run_dir)
    # weights_only refuses pickled code, so a run folder from elsewhere cannot execute anything on load.
    state = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)
    model = WindowGenerator(GANConfig(**state["config"]))
    model.load_state_dict(state["state_dict"])
    return GANGenerator(meta, model)
