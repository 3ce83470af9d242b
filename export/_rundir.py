"""A training run directory, as export needs it: the scoring graph and the calibration windows."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.distribution import FROM_ROWS, FROM_WINDOWS, ranges_from_entry
from edgevae.core.drift import ChannelRanges
from edgevae.core.errors import BundleError, ExportError
from edgevae.export.graph import ScoringGraph
from edgevae.training import checkpoint


@dataclass(frozen=True)
class Run:
    root: Path
    meta: dict[str, Any]
    graph: ScoringGraph
    holdout: np.ndarray
    train_sample: np.ndarray
    holdout_unseen_rows: np.ndarray  # (n,) newest rows of each hold-out window the model never fit

    def calibration_windows(self, score_rows: int) -> np.ndarray:
        """The hold-out windows whose `score_rows` scored rows were all unseen in training."""
        return self.holdout[self.holdout_unseen_rows >= score_rows]

    def channel_ranges(self) -> tuple[ChannelRanges, str]:
        """The training rows' channel ranges from meta.json, and where they come from.

        A run trained before meta.json kept them gets them from its sample of training windows: the same
        data, fewer rows, so the extremes are a little inside the true ones.
        """
        channels = tuple(self.meta["channels"])
        if "channel_ranges" not in self.meta:
            return ChannelRanges.fit(self.train_sample.reshape(-1, len(channels)), channels), FROM_WINDOWS
        try:
            return ranges_from_entry(self.meta["channel_ranges"], channels, "meta.json channel_ranges"), FROM_ROWS
        except BundleError as exc:
            raise ExportError(f"{self.root}: {exc}") from exc


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
    if run.holdout_unseen_rows.shape != (len(run.holdout),):
        msg = f"{run_dir}/calibration.npz: expected one `holdout_unseen_rows` entry per hold-out window"
        raise ExportError(msg)
    graph = ScoringGraph(run.model, run.mean, run.std)
    holdout, train_sample = run.holdout.astype(np.float32), run.train_sample.astype(np.float32)
    return Run(run_dir, run.meta, graph, holdout, train_sample, run.holdout_unseen_rows)
