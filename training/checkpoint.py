"""Training run directories: write and load model.pt, meta.json and calibration.npz."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevae.training.models.vae import VAEConfig, WindowVAE

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODEL_FILE = "model.pt"
META_FILE = "meta.json"
CALIBRATION_FILE = "calibration.npz"
RUN_FILES = (MODEL_FILE, META_FILE, CALIBRATION_FILE)
# meta.json keys added after the first runs were written, with the value an older run implies.
_META_DEFAULTS: dict[str, Any] = {
    "schema_version": 1,
    "created": "",
    "git_sha": None,
    "config": {},
    "data": {},
    "metrics": {},
    "history": [],
}
_META_REQUIRED = ("channels", "window", "normalization")


@dataclass(frozen=True)
class Run:
    path: Path
    model: WindowVAE  # in eval mode
    meta: dict[str, Any]
    holdout: np.ndarray  # (n, window, channels) raw float32 held-out normal windows
    train_sample: np.ndarray  # (n, window, channels) raw float32 training windows
    # (n,) how many of each hold-out window's newest rows are unseen; runs written before it: all of them
    holdout_unseen_rows: np.ndarray

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.meta["channels"])

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.meta["normalization"]["mean"], dtype=np.float64)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.meta["normalization"]["std"], dtype=np.float64)


def git_sha() -> str | None:
    """The commit of the code that is running, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def save_run(out: Path, model: WindowVAE, meta: dict[str, Any], calibration: dict[str, np.ndarray]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model_config": model.cfg.to_dict(), "state_dict": state}, out / MODEL_FILE)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    np.savez_compressed(out / CALIBRATION_FILE, allow_pickle=False, **calibration)
    return out


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    run_dir = Path(run_dir)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        msg = f"{run_dir}: not a training run, missing {', '.join(missing)}; expected {', '.join(RUN_FILES)}"
        raise FileNotFoundError(msg)
    meta = _patch_missing_keys(json.loads((run_dir / META_FILE).read_text()), run_dir)
    # weights_only refuses pickled code, so a run directory from elsewhere cannot execute anything on load.
    checkpoint = torch.load(run_dir / MODEL_FILE, map_location=device, weights_only=True)
    known = {f.name for f in fields(VAEConfig)}
    model = WindowVAE(VAEConfig(**{k: v for k, v in checkpoint["model_config"].items() if k in known}))
    model.load_state_dict(checkpoint["state_dict"])
    model.to(device).eval()
    meta.setdefault("model_config", model.cfg.to_dict())
    with np.load(run_dir / CALIBRATION_FILE) as calibration:
        holdout, train_sample = calibration["holdout"], calibration["train_sample"]
        if "holdout_unseen_rows" in calibration.files:
            unseen = calibration["holdout_unseen_rows"]
        else:
            unseen = np.full(len(holdout), holdout.shape[1] if holdout.ndim == 3 else 0, dtype=np.int64)
    return Run(run_dir, model, meta, holdout, train_sample, unseen)


def _patch_missing_keys(meta: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fill keys that older runs lack, so every later reader can index meta without checks."""
    missing = [key for key in _META_REQUIRED if key not in meta]
    if missing:
        msg = f"{run_dir / META_FILE}: missing {', '.join(missing)}; the run cannot be used"
        raise ValueError(msg)
    for key, default in _META_DEFAULTS.items():
        if key not in meta:
            logger.warning("%s lacks %r; assuming %r", run_dir / META_FILE, key, default)
            meta[key] = default
    for key, fallback in (("stride", meta["config"].get("stride", meta["window"])), ("sample_period_s", 1.0)):
        if key not in meta:
            logger.warning("%s lacks %r; assuming %r", run_dir / META_FILE, key, fallback)
            meta[key] = fallback
    return meta
