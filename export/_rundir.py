"""Read a training run directory (model.pt, meta.json, calibration.npz) into a scoring graph and windows."""

# A minimal reader of the run-directory contract in docs/architecture.md, private to export.

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.errors import ExportError
from export.graph import ScoringGraph
from training.models.vae import VAEConfig, WindowVAE

RUN_FILES = ("model.pt", "meta.json", "calibration.npz")


@dataclass(frozen=True)
class Run:
    root: Path
    meta: dict[str, Any]
    graph: ScoringGraph
    holdout: np.ndarray
    train_sample: np.ndarray


def load_run(run_dir: Path) -> Run:
    """Read model.pt, meta.json and calibration.npz of a run directory (docs/architecture.md)."""
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        msg = f"{run_dir} is not a training run directory: missing {', '.join(missing)} (expected {RUN_FILES})"
        raise ExportError(msg)
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        msg = f"{run_dir}/meta.json is not valid JSON: {exc}"
        raise ExportError(msg) from exc
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects from it would run code.
        checkpoint = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        msg = f"{run_dir}/model.pt cannot be read as a weights-only torch checkpoint: {exc}"
        raise ExportError(msg) from exc
    try:
        cfg = VAEConfig(**checkpoint["model_config"])
        vae = WindowVAE(cfg)
        vae.load_state_dict(checkpoint["state_dict"])
        norm = meta["normalization"]
        graph = ScoringGraph(vae, np.asarray(norm["mean"]), np.asarray(norm["std"]))
        channels = list(meta["channels"])
        window = int(meta["window"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        msg = f"{run_dir}: model.pt and meta.json do not describe a WindowVAE run: {exc!r}"
        raise ExportError(msg) from exc
    if (cfg.window, cfg.channels) != (window, len(channels)):
        msg = (
            f"{run_dir}: meta.json says window {window} x {len(channels)} channels, "
            f"the model was trained on {cfg.window} x {cfg.channels}"
        )
        raise ExportError(msg)
    with np.load(run_dir / "calibration.npz") as cal:
        arrays = {key: np.asarray(cal[key], dtype=np.float32) for key in ("holdout", "train_sample") if key in cal}
    for key in ("holdout", "train_sample"):
        shape = arrays[key].shape if key in arrays else None
        if shape is None or len(shape) != 3 or shape[1:] != (window, len(channels)) or shape[0] == 0:
            msg = f"{run_dir}/calibration.npz: expected `{key}` shaped (n>0, {window}, {len(channels)}), got {shape}"
            raise ExportError(msg)
    return Run(run_dir, meta, graph, arrays["holdout"], arrays["train_sample"])
