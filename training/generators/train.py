"""Train a generator of sensor windows and write its run folder: generator.json and generator.pt.

`train_generator` reads top to bottom as its steps: the training windows, their scaler, the model, the fit
(until --steps or --budget-s), the run folder.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from edgevae.core.errors import TrainingError
from edgevae.training import data
from edgevae.training.checkpoint import git_sha
from edgevae.training.config import TrainConfig, resolve_splits
from edgevae.training.generators import META_FILE, STATE_FILE, GeneratorMeta, Scaler
from edgevae.training.generators.config import GeneratorConfig, validate_config
from edgevae.training.sines import SINES_CHANNELS, SINES_SAMPLES, sines
from edgevae.training.train_vae import torch_settings

logger = logging.getLogger(__name__)

HISTORY_ROWS = 20  # rows of the loss history kept in generator.json, evenly over the run
FINAL_STEPS = 100  # the final losses are means over this many last steps: one step's loss is noise


class _Trainer(Protocol):
    """DiffusionTrainer or GANTrainer: `step` trains on batches from `draw()` and returns its losses."""

    def step(self, draw: Callable[[], torch.Tensor]) -> dict[str, float]: ...
    def state(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Windows:
    windows: np.ndarray  # (n, window, channels) raw float32
    channels: tuple[str, ...]
    source: dict[str, Any]  # the `data` entry of generator.json's training figures


def train_generator(cfg: GeneratorConfig) -> Path:
    """Train on `cfg`'s data and write the run folder `cfg.out`; returns it."""
    validate_config(cfg)
    cfg = cfg.resolved()
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    real = _training_windows(cfg, rng)
    scaler = Scaler.fit(real.windows)
    x = torch.from_numpy(scaler.scale(real.windows))
    logger.info("%d training windows of %d x %d", len(x), cfg.window_rows, len(real.channels))
    with torch_settings(deterministic=True, threads=cfg.threads):
        torch.manual_seed(cfg.seed)  # the initial weights
        trainer = _build(cfg, len(real.channels))
        fit = _fit(trainer, x, cfg)
    training = fit | {"seconds": time.perf_counter() - started, "windows": len(x), "data": real.source}
    training |= {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    training |= {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha()}
    meta = GeneratorMeta(cfg.kind, cfg.window_rows, real.channels, scaler, cfg.seed, _sampler(cfg), training)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(trainer.state(), out / STATE_FILE)
    (out / META_FILE).write_text(meta.to_json())
    logger.info("wrote %s: %d steps in %.0f s", out, fit["steps"], training["seconds"])
    return out


def _training_windows(cfg: GeneratorConfig, rng: np.random.Generator) -> _Windows:
    """The Sines benchmark, or the normal windows of the train split exactly as `edgevae train` makes them."""
    if cfg.sines:
        windows = sines(SINES_SAMPLES, cfg.window_rows, SINES_CHANNELS, seed=cfg.sim_seed)
        channels = tuple(f"sine_{c}" for c in range(SINES_CHANNELS))
        source = {"sines": {"windows": SINES_SAMPLES, "seed": cfg.sim_seed}}
        return _Windows(windows, channels, source | {"sha256": data.sha256_array(windows, cfg.sim_seed)})
    # The same chronological splits `edgevae train` takes, fit on the train share only: synthetic windows
    # mixed into a VAE's training then carry nothing of its validation or hold-out rows.
    split_cfg = TrainConfig(data=cfg.data, out=cfg.out, splits=cfg.splits)
    dataset = data.load_training_data(
        cfg.data, sim_rows=cfg.sim_rows, seed=cfg.sim_seed, fractions=lambda rows: resolve_splits(split_cfg, rows)
    )
    data.check_windows(dataset, cfg.window_rows, {"train": cfg.stride}, option=f"--window {cfg.window_rows}")
    windows = data.make_windows(dataset.splits["train"], cfg.window_rows, cfg.stride, cfg.max_windows, rng)
    return _Windows(windows, dataset.channels, dataset.describe())


def _build(cfg: GeneratorConfig, channels: int) -> _Trainer:
    if cfg.kind == "diffusion":
        from edgevae.training.generators.diffusion import DiffusionConfig, DiffusionTrainer

        model_cfg = DiffusionConfig(
            cfg.window_rows, channels, cfg.hidden, cfg.blocks, cfg.timesteps, cfg.prediction, cfg.position_features
        )
        return DiffusionTrainer(model_cfg, cfg.learning_rate, cfg.ema_decay, cfg.seed)
    from edgevae.training.generators.gan import GANConfig, GANTrainer

    gan_cfg = GANConfig(
        cfg.window_rows, channels, cfg.hidden, cfg.blocks, cfg.noise_dim, cfg.global_noise_dim, cfg.position_features
    )
    return GANTrainer(
        gan_cfg, cfg.learning_rate, cfg.critic_learning_rate, cfg.n_critic, cfg.gp_weight, cfg.ema_decay, cfg.seed
    )


def _sampler(cfg: GeneratorConfig) -> dict[str, Any]:
    """generator.json's sampler settings: what `sample` does with a seed."""
    if cfg.kind == "diffusion":
        return {"method": "ddim", "ddim_steps": cfg.ddim_steps, "eta": 0.0, "timesteps": cfg.timesteps,
                "prediction": cfg.prediction, "schedule": "cosine"}  # fmt: skip
    return {"method": "wgan-gp", "noise_dim": cfg.noise_dim, "global_noise_dim": cfg.global_noise_dim}


def _fit(trainer: _Trainer, x: torch.Tensor, cfg: GeneratorConfig) -> dict[str, Any]:
    """Train until `cfg.total_steps` or `cfg.budget_s`, whichever comes first; the training figures."""
    batches = torch.Generator().manual_seed(cfg.seed)

    def draw() -> torch.Tensor:
        return x[torch.randint(len(x), (cfg.batch_size,), generator=batches)]

    started = time.perf_counter()
    every = max(1, cfg.total_steps // HISTORY_ROWS)
    recent: list[dict[str, float]] = []
    history: list[dict[str, Any]] = []
    stopped_by = "steps"
    bar = tqdm(range(1, cfg.total_steps + 1), desc=cfg.kind, disable=not (cfg.progress and sys.stderr.isatty()))
    step = 0
    for step in bar:
        losses = trainer.step(draw)
        if not all(math.isfinite(v) for v in losses.values()):
            msg = f"{cfg.kind} training diverged at step {step}: {losses}"
            raise TrainingError(msg, remedy=f"lower --lr (now {cfg.learning_rate})")
        recent = [*recent[-(FINAL_STEPS - 1) :], losses]
        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
        if step % every == 0:
            history.append({"step": step, "seconds": time.perf_counter() - started, **_mean(recent[-every:])})
        if time.perf_counter() - started > cfg.budget_s and step < cfg.total_steps:
            logger.info("--budget-s %s reached after %d of %d steps", cfg.budget_s, step, cfg.total_steps)
            stopped_by = "budget"
            break
    seconds = time.perf_counter() - started
    return {"steps": step, "stopped_by": stopped_by, "fit_seconds": seconds, "seconds_per_step": seconds / step,
            "final_losses": _mean(recent), "history": history}  # fmt: skip


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
