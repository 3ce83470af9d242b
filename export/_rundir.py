"""A training run directory, as export needs it: the scoring graph and the calibration windows."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.core.errors import ExportError
from edgevae.export.graph import ScoringGraph
from edgevae.training import checkpoint


@dataclass(frozen=True)
class Run:
    root: Path
    meta: dict[str, Any]
    graph: ScoringGraph
    holdout: np.ndarray
    train_sample: np.ndarray


def load_run(run_dir: Path) -> Run:
    """Read a run written by `edgevae train` (docs/architecture.md) and check it is exportable."""
    try:
        run = checkpoint.load_run(run_dir)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as exc:
        msg = f"{run_dir} cannot be exported: {exc}"
        raise ExportError(msg) from exc
    cfg = run.model.cfg
    if (cfg.window, cfg.channels) != (run.window, len(run.channels)):
        msg = (
            f"{run_dir}: meta.json says window {run.window} x {len(run.channels)} channels, "
            f"the model was trained on {cfg.window} x {cfg.channels}"
        )
        raise ExportError(msg)
    arrays = {"holdout": run.holdout, "train_sample": run.train_sample}
    for key, array in arrays.items():
        if array.ndim != 3 or array.shape[1:] != (run.window, len(run.channels)) or array.shape[0] == 0:
            msg = (
                f"{run_dir}/calibration.npz: expected `{key}` shaped (n>0, {run.window}, {len(run.channels)}), "
                f"got {array.shape}"
            )
            raise ExportError(msg)
    graph = ScoringGraph(run.model, run.mean, run.std)
    return Run(run_dir, run.meta, graph, run.holdout.astype(np.float32), run.train_sample.astype(np.float32))
