"""Variational autoencoders of multivariate sensor windows shaped (batch, time, channel)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("mlp", "conv", "tcn")
LIKELIHOODS = ("mse", "gaussian")


@dataclass
class VAEConfig:
    window: int
    channels: int
    arch: str = "conv"
    latent: int = 8
    hidden: int = 64
    # "mse": fixed-variance Gaussian decoder; "gaussian": the decoder also predicts a per-point log-variance.
    likelihood: str = "mse"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            msg = f"arch must be one of {ARCHITECTURES}, got {self.arch!r}"
            raise ValueError(msg)
        if self.likelihood not in LIKELIHOODS:
            msg = f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}"
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # (B, T, C) decoder mean, normalized units
    recon_logvar: torch.Tensor | None  # (B, T, C) or None for the fixed-variance decoder
    mu: torch.Tensor  # (B, latent)
    logvar: torch.Tensor  # (B, latent)


class _MLPCodec(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        flat = cfg.window * cfg.channels
        out_mult = 2 if cfg.likelihood == "gaussian" else 1
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 2 * cfg.hidden), nn.GELU(), nn.Linear(2 * cfg.hidden, cfg.hidden), nn.GELU()
        )
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, 2 * cfg.hidden),
            nn.GELU(),
            nn.Linear(2 * cfg.hidden, flat * out_mult),
        )
        self.shape = (cfg.window, cfg.channels * out_mult)

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.encoder(x)
        return features

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        raw: torch.Tensor = self.decoder(z)
        return raw.reshape(-1, *self.shape)


class _ConvCodec(nn.Module):
    """Two strided Conv1d layers over time; the window length must be divisible by 4."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if cfg.window % 4:
            msg = f"the conv VAE needs a window divisible by 4, got {cfg.window}"
            raise ValueError(msg)
        h = cfg.hidden
        out_mult = 2 if cfg.likelihood == "gaussian" else 1
        self.encoder = nn.Sequential(
            nn.Conv1d(cfg.channels, h // 2, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv1d(h // 2, h, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(h * (cfg.window // 4), h),
            nn.GELU(),
        )
        self.decoder_fc = nn.Sequential(nn.Linear(cfg.latent, h * (cfg.window // 4)), nn.GELU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose1d(h, h // 2, 4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose1d(h // 2, h // 2, 4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv1d(h // 2, cfg.channels * out_mult, 3, padding=1),
        )
        self.h = h
        self.steps = cfg.window // 4

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.encoder(x.transpose(1, 2))
        return features

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder_fc(z).reshape(-1, self.h, self.steps)
        raw: torch.Tensor = self.decoder(y)
        return raw.transpose(1, 2)


class _DilatedBlock(nn.Module):
    """A residual dilated convolution over time that keeps the length (zero padding, centred kernel)."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The residual path starts each block near the identity, which keeps a deep stack easy to optimize.
        out: torch.Tensor = x + self.mix(F.gelu(self.conv(x)))
        return out


class _TCNCodec(nn.Module):
    """Residual dilated Conv1d stacks at full time resolution; any window length.

    Kernel 3 with dilations 1, 2, ..., 2**(n-1) sees 2**(n+1) - 1 steps centred on each point; n is the
    smallest with 2**n >= window, so every time step of the encoder's output already sees the whole window.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        width = max(cfg.hidden // 2, 2)
        # Channels per time step kept into the flatten: a full-width flatten would cost width * window * hidden
        # weights (65k at hidden 64, window 32); the narrow one keeps where in the window things happen for
        # a quarter of that.
        squeeze = max(cfg.hidden // 8, 2)
        out_mult = 2 if cfg.likelihood == "gaussian" else 1
        dilations = [2**i for i in range(max((cfg.window - 1).bit_length(), 1))]
        self.encoder = nn.Sequential(
            nn.Conv1d(cfg.channels, width, 1),
            *(_DilatedBlock(width, d) for d in dilations),
            nn.GELU(),
            nn.Conv1d(width, squeeze, 1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(squeeze * cfg.window, cfg.hidden),
            nn.GELU(),
        )
        self.decoder_fc = nn.Sequential(nn.Linear(cfg.latent, width * cfg.window), nn.GELU())
        # Widest dilation first: the decoder lays out the slow shape of the window, then refines it locally.
        self.decoder = nn.Sequential(
            *(_DilatedBlock(width, d) for d in reversed(dilations)),
            nn.GELU(),
            nn.Conv1d(width, cfg.channels * out_mult, 3, padding=1),
        )
        self.width = width
        self.steps = cfg.window

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.encoder(x.transpose(1, 2))
        return features

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder_fc(z).reshape(-1, self.width, self.steps)
        raw: torch.Tensor = self.decoder(y)
        return raw.transpose(1, 2)


_Codec = _MLPCodec | _ConvCodec | _TCNCodec
_CODECS: dict[str, type[_Codec]] = {"mlp": _MLPCodec, "conv": _ConvCodec, "tcn": _TCNCodec}


class WindowVAE(nn.Module):
    """Gaussian encoder q(z|x), standard normal prior, Gaussian decoder p(x|z) over normalized windows."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.codec: _Codec = _CODECS[cfg.arch](cfg)
        self.to_mu = nn.Linear(cfg.hidden, cfg.latent)
        self.to_logvar = nn.Linear(cfg.hidden, cfg.latent)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.codec.encode_features(x)
        return self.to_mu(features), self.to_logvar(features).clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raw = self.codec.decode_raw(z)
        if self.cfg.likelihood == "gaussian":
            mean, logvar = raw.chunk(2, dim=-1)
            return mean, logvar.clamp(-8.0, 8.0)
        return raw, None

    def forward(self, x: torch.Tensor, sample: bool = True) -> VAEOutput:
        mu, logvar = self.encode(x)
        # Reparameterization: z = mu + sigma * eps keeps the sample differentiable in mu and sigma.
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        recon, recon_logvar = self.decode(z)
        return VAEOutput(recon, recon_logvar, mu, logvar)
