"""The VAE's negative ELBO, split into reconstruction and KL terms, and the KL warm-up schedule.

Each term is summed over a sample's window points (or latent dimensions) and averaged over the batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from edgevae.training.models.vae import VAEOutput

LOG_2PI = math.log(2.0 * math.pi)


class ELBOTerms(NamedTuple):
    loss: torch.Tensor  # recon + beta * kl, the quantity to minimize
    recon: torch.Tensor
    kl: torch.Tensor


def gaussian_nll(squared_error: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, exp(logvar)) point by point, from (x - mean)^2 and the log-variance, in nats.

    The one form of the Gaussian NLL: training's loss sums it, the exported scoring graph averages it.
    """
    return 0.5 * (logvar + squared_error * torch.exp(-logvar) + LOG_2PI)


def reconstruction_nll(x: torch.Tensor, recon: torch.Tensor, recon_logvar: torch.Tensor | None) -> torch.Tensor:
    """Per-sample reconstruction term, shape (batch,).

    Without a predicted variance it is the summed squared error: the Gaussian NLL with a fixed variance of
    1/2, up to a constant. With one ("gaussian" likelihood) it is the full Gaussian NLL per point.
    """
    squared = (x - recon).pow(2)
    if recon_logvar is None:
        return squared.flatten(1).sum(1)
    return gaussian_nll(squared, recon_logvar).flatten(1).sum(1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, shape (batch,), in closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def elbo_terms(out: VAEOutput, x: torch.Tensor, beta: float) -> ELBOTerms:
    recon = reconstruction_nll(x, out.recon, out.recon_logvar).mean()
    kl = kl_to_standard_normal(out.mu, out.logvar).mean()
    return ELBOTerms(recon + beta * kl, recon, kl)


def beta_schedule(epoch: int, beta: float, warmup_epochs: int) -> float:
    """KL weight for a 0-based epoch: rises linearly to `beta` over `warmup_epochs`, then stays there.

    Early in training the KL term is cheap to drive to zero by ignoring the latent code, and a decoder that
    has learned to ignore it rarely recovers (posterior collapse). A small weight at first lets the encoder
    carry information before the prior's pull reaches full strength.

    >>> [beta_schedule(e, 1.0, 4) for e in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, (epoch + 1) / warmup_epochs)
