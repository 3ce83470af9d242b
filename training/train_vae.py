"""Train a WindowVAE on normal sensor windows and write a run directory: model.pt, meta.json, calibration.npz.

`train` reads top to bottom as its steps: prepare the data, build the model, fit it, write the run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgevae.agent.distribution import ranges_entry
from edgevae.core.drift import ChannelRanges
from edgevae.core.errors import ConfigError, TrainingError
from edgevae.training import data
from edgevae.training.checkpoint import SCHEMA_VERSION, git_sha, save_run
from edgevae.training.config import TrainConfig, resolve_splits, validate_config
from edgevae.training.generators.augment import mix_synthetic
from edgevae.training.losses import beta_schedule, elbo_terms
from edgevae.training.models.vae import VAEConfig, VAEOutput, WindowVAE

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_settings(deterministic: bool, threads: int | None) -> Iterator[None]:
    """Deterministic kernels and a thread count for the duration, then the caller's back (both are process-wide).

    Results are reproducible for a given thread count; a different count can change the last bits.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads or previous[1])
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


@torch.no_grad()
def evaluate(model: WindowVAE, x: torch.Tensor, beta: float, batch_size: int, seed: int) -> dict[str, float]:
    """Validation ELBO terms and the per-point MSE of the posterior-mean reconstruction (the deployed score).

    The reparameterization noise comes from a generator reset on every call, so epochs are compared on the
    same noise and a change in the loss is a change in the model.
    """
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    totals = np.zeros(4)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn(mu.shape, generator=gen, device=x.device) * torch.exp(0.5 * logvar)
        recon, recon_logvar = model.decode(z)
        terms = elbo_terms(VAEOutput(recon, recon_logvar, mu, logvar), xb, beta)
        mse = (model.decode(mu)[0] - xb).pow(2).mean()
        totals += len(xb) * np.array([terms.loss.item(), terms.recon.item(), terms.kl.item(), mse.item()])
    loss, recon_term, kl, mse_point = (totals / len(x)).tolist()
    return {"loss": loss, "recon": recon_term, "kl": kl, "mse": mse_point}


def train(cfg: TrainConfig) -> Path:
    """Train on `cfg.data` (or the simulated plant) and write the run directory `cfg.out`; returns it."""
    validate_config(cfg)
    started = time.perf_counter()
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dataset, cfg = _load_data(cfg)
    prepared = _prepare(dataset, cfg, device, rng)
    model_cfg = VAEConfig(cfg.window, len(dataset.channels), cfg.arch, cfg.latent, cfg.hidden, cfg.likelihood)
    model = WindowVAE(model_cfg).to(device)
    with torch_settings(deterministic=device.type == "cpu", threads=cfg.threads):
        fit = _fit(model, prepared, cfg)
    model.load_state_dict(fit.best_state)
    metrics = fit.metrics(cfg.epochs) | {
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "train_windows": len(prepared.train_x),
        "val_windows": len(prepared.val_x),
    }
    return _write_run(cfg, dataset, prepared, model, model_cfg, metrics, fit.history, rng)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        msg = "--device cuda: torch sees no CUDA device on this machine"
        raise ConfigError(msg, remedy="use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _load_data(cfg: TrainConfig) -> tuple[data.TrainingData, TrainConfig]:
    """The data split chronologically; the config comes back with the splits it was given resolved."""
    chosen: list[tuple[float, float, float]] = []

    def fractions(rows: int) -> tuple[float, float, float]:
        chosen.append(resolve_splits(cfg, rows))
        return chosen[-1]

    dataset = data.load_training_data(
        cfg.data, sim_rows=cfg.sim_rows, seed=cfg.sim_seed, fractions=fractions, read=cfg.read
    )
    if dataset.rows_dropped or dataset.rows_filled:
        logger.info(
            "missing cells: %d rows dropped, %d rows forward-filled (--missing %s)",
            dataset.rows_dropped,
            dataset.rows_filled,
            cfg.read.missing,
        )
    if cfg.splits is None:
        logger.info("splits %s for %d rows (set --splits to choose)", chosen[0], dataset.rows)
    return dataset, replace(cfg, splits=chosen[0])


@dataclass
class _Prepared:
    mean: np.ndarray
    std: np.ndarray
    train_x: torch.Tensor  # normalized training windows
    val_x: torch.Tensor  # normalized validation windows
    holdout_split: str  # the split whose windows calibrate the threshold
    augment: dict[str, Any] | None  # what --augment mixed into train_x, None without it


def _prepare(dataset: data.TrainingData, cfg: TrainConfig, device: torch.device, rng: np.random.Generator) -> _Prepared:
    """Normalization from the training rows only, and the normalized training and validation windows."""
    assert cfg.splits is not None
    holdout_split = "holdout" if cfg.splits[2] > 0 else "val"
    strides = {"train": cfg.train_stride, "val": cfg.train_stride, holdout_split: 1}
    data.check_windows(dataset, cfg.window, strides, option=f"--window {cfg.window}")
    mean, std = data.fit_normalization(dataset.splits["train"], cfg.std_floor_rel)
    train_raw = data.make_windows(dataset.splits["train"], cfg.window, cfg.train_stride, cfg.max_train_windows, rng)
    augment = None
    if cfg.augment is not None:
        # Its own random generator: validation and hold-out windows stay those of the run without --augment.
        mix_rng = np.random.default_rng([cfg.seed, 1])
        train_raw, augment = mix_synthetic(train_raw, cfg.augment, dataset.channels, mix_rng)
    val_raw = data.make_windows(dataset.splits["val"], cfg.window, cfg.train_stride, cfg.max_holdout_windows, rng)
    train_x = torch.from_numpy(data.normalize(train_raw, mean, std)).to(device)
    val_x = torch.from_numpy(data.normalize(val_raw, mean, std)).to(device)
    logger.info("%d train and %d val windows of %d x %d on %s", len(train_x), len(val_x), cfg.window, len(mean), device)
    return _Prepared(mean, std, train_x, val_x, holdout_split, augment)


@dataclass
class _Fit:
    history: list[dict[str, Any]]
    best_epoch: int
    best_loss: float
    best_state: dict[str, torch.Tensor]

    def metrics(self, max_epochs: int) -> dict[str, Any]:
        best_row = self.history[self.best_epoch - 1]
        return {
            "best_epoch": self.best_epoch,
            **{k: v for k, v in best_row.items() if k.startswith(("train_", "val_"))},
            "epochs_run": len(self.history),
            "stopped_early": len(self.history) < max_epochs,
        }


def _fit(model: WindowVAE, prepared: _Prepared, cfg: TrainConfig) -> _Fit:
    """Validate every epoch, keep the best state, stop when validation stops improving."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch_order = torch.Generator().manual_seed(cfg.seed)
    run_epoch = partial(_train_epoch, model, optimizer, prepared.train_x, cfg, batch_order)
    history: list[dict[str, Any]] = []
    best: _Fit | None = None
    stale_epochs = 0
    for epoch in range(1, cfg.epochs + 1):
        epoch_started = time.perf_counter()
        beta = beta_schedule(epoch - 1, cfg.beta, cfg.kl_warmup_epochs)
        train_loss, train_recon, train_kl = run_epoch(beta, epoch)
        val = evaluate(model, prepared.val_x, cfg.beta, cfg.batch_size, cfg.seed)
        if not (math.isfinite(train_loss) and math.isfinite(val["loss"])):
            msg = f"training diverged in epoch {epoch}: train loss {train_loss}, validation loss {val['loss']}"
            raise TrainingError(msg, remedy=f"lower --lr (now {cfg.lr}) or keep --grad-clip above 0")
        row = {"epoch": epoch, "beta": beta, "train_loss": train_loss, "train_recon": train_recon}
        row |= {"train_kl": train_kl, **{f"val_{k}": v for k, v in val.items()}}
        row["seconds"] = time.perf_counter() - epoch_started
        history.append(row)
        per_epoch = sum(h["seconds"] for h in history) / len(history)
        # "At most": early stopping usually ends it sooner.
        left = f"{per_epoch:.1f} s/epoch, at most {per_epoch * (cfg.epochs - epoch):.0f} s left"
        logger.info(
            "epoch %(epoch)d of %(epochs)d: train %(train_loss).4f | val %(val_loss).4f (recon %(val_recon).4f, "
            "kl %(val_kl).4f, mse %(val_mse).5f) | beta %(beta).3f | %(left)s",
            row | {"epochs": cfg.epochs, "left": left},
        )
        if best is None or val["loss"] < best.best_loss - cfg.min_delta:
            best = _Fit(history, epoch, val["loss"], _clone_state(model))
            stale_epochs = 0
        elif epoch > cfg.kl_warmup_epochs:
            # Warm-up epochs don't count: the full-beta validation ELBO can rise while the KL weight ramps.
            stale_epochs += 1
        if stale_epochs >= cfg.patience:
            logger.info("no better validation loss for %d epochs; stopping", stale_epochs)
            break
    assert best is not None  # cfg.epochs >= 1
    return best


def _train_epoch(
    model: WindowVAE,
    optimizer: torch.optim.Optimizer,
    train_x: torch.Tensor,
    cfg: TrainConfig,
    batch_order: torch.Generator,
    beta: float,
    epoch: int,
) -> tuple[float, float, float]:
    """One pass over the training windows in a seeded order; the mean loss, reconstruction and KL terms."""
    model.train()
    totals = np.zeros(3)
    order = torch.randperm(len(train_x), generator=batch_order).to(train_x.device)
    show_progress = cfg.progress and sys.stderr.isatty()
    desc = f"epoch {epoch}/{cfg.epochs}"
    bar = tqdm(range(0, len(train_x), cfg.batch_size), desc=desc, disable=not show_progress)
    for start in bar:
        xb = train_x[order[start : start + cfg.batch_size]]
        terms = elbo_terms(model(xb), xb, beta)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        batch = np.array([terms.loss.item(), terms.recon.item(), terms.kl.item()])
        totals += len(xb) * batch
        bar.set_postfix(loss=f"{batch[0]:.3f}", recon=f"{batch[1]:.3f}", kl=f"{batch[2]:.3f}")
    loss, recon, kl = (totals / len(train_x)).tolist()
    return loss, recon, kl


def _write_run(
    cfg: TrainConfig,
    dataset: data.TrainingData,
    prepared: _Prepared,
    model: WindowVAE,
    model_cfg: VAEConfig,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    rng: np.random.Generator,
) -> Path:
    """model.pt, meta.json and the raw calibration windows (calibration.npz) under `cfg.out`."""
    runs = dataset.context[prepared.holdout_split]
    holdout, holdout_unseen = data.holdout_windows(runs, cfg.window, cfg.max_holdout_windows, rng)
    calibration = {
        # Every hold-out window, not every stride-th: the alert threshold is a tail quantile and needs samples.
        "holdout": holdout,
        # How many of each hold-out window's newest rows the model never fit (the rest is context).
        "holdout_unseen_rows": holdout_unseen,
        "train_sample": data.make_windows(
            dataset.splits["train"], cfg.window, cfg.train_stride, cfg.calibration_windows, rng
        ),
    }
    meta = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "data": dataset.describe(),
        "channels": list(dataset.channels),
        "window": cfg.window,
        "stride": cfg.stride,
        "sample_period_s": dataset.sample_period_s,
        "normalization": {"mean": prepared.mean.tolist(), "std": prepared.std.tolist()},
        # The range of every training row (not only the windows sampled), which the bundle's drift checks
        # measure new readings against.
        "channel_ranges": ranges_entry(ChannelRanges.fit(np.concatenate(dataset.splits["train"]), dataset.channels)),
        "model_config": model_cfg.to_dict(),
        "metrics": metrics,
        "history": history,
        "augment": prepared.augment,
    }
    out = save_run(Path(cfg.out), model, meta, calibration)
    logger.info("wrote %s: best epoch %d of %d", out, metrics["best_epoch"], metrics["epochs_run"])
    return out


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
