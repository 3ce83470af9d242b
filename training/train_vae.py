"""Train a WindowVAE on normal sensor windows and write a run directory: model.pt, meta.json, calibration.npz."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgevae.core.errors import ConfigError
from edgevae.training import data
from edgevae.training.checkpoint import SCHEMA_VERSION, git_sha, save_run
from edgevae.training.data import STD_FLOOR_REL
from edgevae.training.losses import beta_schedule, elbo_terms
from edgevae.training.models.vae import ARCHITECTURES, LIKELIHOODS, VAEConfig, VAEOutput, WindowVAE

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    # data
    data: Path | None  # a CSV file or folder of them; None trains on the simulated plant
    out: Path
    # 20k rows left operating points of the replay streams unseen (1 false alert in 48k rows); 50k, none.
    sim_rows: int = 50_000
    sim_seed: int = 0
    window: int = 32
    stride: int = 8  # scoring stride written to meta.json for deployment
    train_stride: int = 1
    max_train_windows: int | None = None
    calibration_windows: int = 2000
    # Chronological train/val/hold-out shares of each file. A hold-out share of 0 calibrates the threshold on
    # the validation windows instead (for small data, where every row is needed for fitting).
    splits: tuple[float, float, float] = (0.70, 0.15, 0.15)
    std_floor_rel: float = STD_FLOOR_REL
    # model
    arch: str = "conv"
    latent: int = 8
    hidden: int = 64
    likelihood: str = "mse"
    # optimization
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # With the fixed-variance (MSE) decoder, beta=1 over-smooths reconstructions: on the simulated plant the
    # hold-out p99 score was 7x its median and 4 of 6 faults went unseen; beta=0.02 caught all six.
    beta: float = 0.02
    kl_warmup_epochs: int = 10
    patience: int = 8
    min_delta: float = 0.0
    # system
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch; None keeps torch's default
    seed: int = 0
    progress: bool = True


# Every TrainConfig field is a flag, by group; the dict keys are the field names.
_FLAGS: dict[str, dict[str, str]] = {
    "data": {
        "data": "CSV file or folder of CSV files of normal operation; omit to train on the simulated pump",
        "out": "run directory to write (model.pt, meta.json, calibration.npz)",
        "sim_rows": "rows of simulated data when --data is omitted",
        "sim_seed": "seed of the simulated plant",
        "window": "window length in rows",
        "stride": "scoring stride in rows written for deployment",
        "train_stride": "stride between training and validation windows",
        "max_train_windows": "cap on training windows, sampled with --seed (default: all)",
        "calibration_windows": "raw training windows kept in calibration.npz as train_sample",
        "std_floor_rel": "normalization: each channel's std is at least this share of its mean magnitude",
        "splits": "chronological train, validation and hold-out shares of each file; a hold-out of 0 calibrates "
        "the threshold on the validation windows",
    },
    "model": {
        "arch": "encoder/decoder architecture",
        "latent": "latent dimensions",
        "hidden": "hidden width",
        "likelihood": "decoder likelihood; 'gaussian' also learns a per-point variance",
    },
    "optimization": {
        "epochs": "maximum epochs",
        "batch_size": "windows per batch",
        "lr": "Adam learning rate",
        "weight_decay": "Adam weight decay",
        "grad_clip": "clip the gradient norm to this value (0 disables)",
        "beta": "weight of the KL term once warmed up",
        "kl_warmup_epochs": "epochs over which the KL weight rises linearly to --beta",
        "patience": "stop after this many epochs past warm-up without a better validation ELBO",
        "min_delta": "smallest drop in validation loss that counts as better",
    },
    "system": {
        "device": "auto picks cuda when torch sees a GPU",
        "threads": "torch CPU threads (default: torch's choice); 1 is often fastest on a busy machine",
        "seed": "seed of initialization, batch order, sampling and window subsets",
        "progress": "show a progress bar per epoch (only on a terminal)",
    },
}
_CHOICES = {"arch": ARCHITECTURES, "likelihood": LIKELIHOODS, "device": DEVICES}
_TYPES: dict[str, type] = {"data": Path, "out": Path, "max_train_windows": int, "threads": int}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for title, flags in _FLAGS.items():
        group = parser.add_argument_group(title)
        for name, text in flags.items():
            flag = "--" + name.replace("_", "-")
            default = defaults[name] if name not in ("data", "out") else None
            if name == "progress":
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
                continue
            if name == "splits":
                group.add_argument(
                    flag,
                    nargs=3,
                    type=float,
                    metavar=("TRAIN", "VAL", "HOLDOUT"),
                    default=default,
                    help=text + " (default: %(default)s)",
                )
                continue
            group.add_argument(
                flag,
                type=_TYPES.get(name, type(default)),
                default=default,
                choices=_CHOICES.get(name),
                required=name == "out",
                help=text + (" (default: %(default)s)" if default is not None else ""),
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    cfg.splits = tuple(cfg.splits)  # type: ignore[assignment]
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    """Reject settings that cannot train, naming the flag."""
    positive = ("sim_rows", "window", "stride", "train_stride", "epochs", "batch_size", "latent", "patience")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    nonnegative = (
        "lr",
        "weight_decay",
        "grad_clip",
        "beta",
        "kl_warmup_epochs",
        "min_delta",
        "calibration_windows",
        "std_floor_rel",
    )
    for name in nonnegative:
        if getattr(cfg, name) < 0 or not math.isfinite(getattr(cfg, name)):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(cfg, name)}")
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"--{name} must be one of {choices}, got {getattr(cfg, name)!r}")
    if cfg.window < 2:
        raise ConfigError(f"--window must be >= 2, got {cfg.window}")
    train_share, val_share, holdout_share = cfg.splits
    if not (train_share > 0 and val_share > 0 and holdout_share >= 0 and math.isfinite(sum(cfg.splits))):
        raise ConfigError(f"--splits expects TRAIN > 0, VAL > 0 and HOLDOUT >= 0, got {list(cfg.splits)}")
    if cfg.arch == "conv" and cfg.window % 4:
        raise ConfigError(f"--window must be divisible by 4 for --arch conv, got {cfg.window}")
    if cfg.hidden < 2:
        raise ConfigError(f"--hidden must be >= 2, got {cfg.hidden}")
    for name in ("max_train_windows", "threads"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.data is not None and not Path(cfg.data).exists():
        raise ConfigError(f"--data {cfg.data}: no such file or folder")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        msg = "--device cuda: torch sees no CUDA device on this machine; use --device cpu or auto"
        raise ConfigError(msg)


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
    validate_config(cfg)
    started = time.perf_counter()
    device = torch.device(
        "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # Data: chronological splits of normal rows; normalization from the training rows only.
    dataset = data.load_training_data(cfg.data, sim_rows=cfg.sim_rows, seed=cfg.sim_seed, fractions=cfg.splits)
    holdout_split = "holdout" if cfg.splits[2] > 0 else "val"
    strides = {"train": cfg.train_stride, "val": cfg.train_stride, holdout_split: 1}
    data.check_windows(dataset, cfg.window, strides, option=f"--window {cfg.window}")
    mean, std = data.fit_normalization(dataset.splits["train"], cfg.std_floor_rel)
    train_raw = data.make_windows(dataset.splits["train"], cfg.window, cfg.train_stride, cfg.max_train_windows, rng)
    train_x = torch.from_numpy(data.normalize(train_raw, mean, std)).to(device)
    val_raw = data.make_windows(dataset.splits["val"], cfg.window, cfg.train_stride)
    val_x = torch.from_numpy(data.normalize(val_raw, mean, std)).to(device)
    logger.info("%d train and %d val windows of %d x %d on %s", len(train_x), len(val_x), cfg.window, len(mean), device)

    # Model and optimizer.
    model_cfg = VAEConfig(cfg.window, len(dataset.channels), cfg.arch, cfg.latent, cfg.hidden, cfg.likelihood)
    model = WindowVAE(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch_order = torch.Generator().manual_seed(cfg.seed)
    show_progress = cfg.progress and sys.stderr.isatty()

    # Training loop: validate every epoch, keep the best state, stop when validation stops improving.
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"loss": math.inf, "epoch": 0, "state": None}
    stale_epochs = 0
    # CUDA would also need CUBLAS_WORKSPACE_CONFIG set at start-up for deterministic kernels.
    with torch_settings(deterministic=device.type == "cpu", threads=cfg.threads):
        for epoch in range(cfg.epochs):
            epoch_started = time.perf_counter()
            beta = beta_schedule(epoch, cfg.beta, cfg.kl_warmup_epochs)
            model.train()
            totals = np.zeros(3)
            order = torch.randperm(len(train_x), generator=batch_order).to(device)
            bar = tqdm(range(0, len(train_x), cfg.batch_size), desc=f"epoch {epoch + 1}", disable=not show_progress)
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
            train_loss, train_recon, train_kl = (totals / len(train_x)).tolist()
            val = evaluate(model, val_x, cfg.beta, cfg.batch_size, cfg.seed)
            if not (math.isfinite(train_loss) and math.isfinite(val["loss"])):
                msg = f"training diverged in epoch {epoch + 1} (train {train_loss}, val {val['loss']}); lower --lr"
                raise FloatingPointError(msg)
            row = {"epoch": epoch + 1, "beta": beta, "train_loss": train_loss, "train_recon": train_recon}
            row |= {"train_kl": train_kl, **{f"val_{k}": v for k, v in val.items()}}
            row["seconds"] = time.perf_counter() - epoch_started
            history.append(row)
            logger.info(
                "epoch %(epoch)d: train %(train_loss).4f | val %(val_loss).4f (recon %(val_recon).4f, "
                "kl %(val_kl).4f, mse %(val_mse).5f) | beta %(beta).3f",
                row,
            )
            if val["loss"] < best["loss"] - cfg.min_delta:
                best = {"loss": val["loss"], "epoch": epoch + 1, "state": _clone_state(model)}
                stale_epochs = 0
            elif epoch + 1 > cfg.kl_warmup_epochs:
                # Warm-up epochs don't count: the full-beta validation ELBO can rise while the KL weight ramps.
                stale_epochs += 1
            if stale_epochs >= cfg.patience:
                logger.info("no better validation loss for %d epochs; stopping", stale_epochs)
                break
    model.load_state_dict(best["state"])

    # The run directory.
    best_row = history[best["epoch"] - 1]
    metrics = {
        "best_epoch": best["epoch"],
        **{k: v for k, v in best_row.items() if k.startswith(("train_", "val_"))},
        "epochs_run": len(history),
        "stopped_early": len(history) < cfg.epochs,
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "train_windows": len(train_x),
        "val_windows": len(val_x),
    }
    calibration = {
        # Every hold-out window, not every stride-th: the alert threshold is a tail quantile and needs samples.
        "holdout": data.make_windows(dataset.splits[holdout_split], cfg.window, 1),
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
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "model_config": model_cfg.to_dict(),
        "metrics": metrics,
        "history": history,
    }
    out = save_run(Path(cfg.out), model, meta, calibration)
    logger.info("wrote %s: best epoch %d of %d, val loss %.4f", out, best["epoch"], len(history), best["loss"])
    return out


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
