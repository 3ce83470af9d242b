"""Training data for the VAE: tables in, chronological splits of normal rows, normalization and windows out.

Training is on normal behaviour only: rows labelled anomalous are dropped, and a window never spans a dropped
stretch or a split boundary, so no window mixes normal and anomalous rows or leaks across splits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.bundle import sha256_files
from edgevae.agent.table import DEFAULT_READ, Table, infer_sample_period, read_tables
from edgevae.agent.table_options import ReadOptions
from edgevae.core.errors import ConfigError
from edgevae.core.window import sliding_windows, window_count
from edgevae.training.simulate import simulate_plant

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "holdout")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
# A constant channel has std 0; the floor keeps its normalized value finite. The relative part stops a
# near-constant channel (a quantized thermocouple) from turning one quantization step into many sigmas:
# on SKAB, a thermocouple whose std over the fit rows was 0.03 degC (0.1 % of its value) drifted by 0.3 degC
# in normal operation; a 1 % floor cut the SKAB leaderboard's false-alarm rate from 31.8 % to 13.3 % at a
# missed-alarm rate of 26.2 % instead of 20.5 % (docs/skab/model-selection.md).
STD_FLOOR_ABS = 1e-6
STD_FLOOR_REL = 1e-2


@dataclass(frozen=True)
class TrainingData:
    channels: tuple[str, ...]
    sources: tuple[str, ...]  # file paths, or the simulated plant's name
    sha256: str
    rows: int  # rows read, before dropping anomalous ones
    anomalous_rows: int
    sample_period_s: float
    # Per split, the runs of consecutive normal rows (rows, channels) in raw units, in file order.
    splits: dict[str, list[np.ndarray]]
    # Per split, the same runs as (rows, lead): each run preceded by the normal rows just before it (`lead`
    # of them), which a window may read as context without those rows counting as unseen (`holdout_windows`).
    context: dict[str, list[tuple[np.ndarray, int]]]
    simulated: dict[str, int] | None = None  # {"rows", "seed"} when the plant was simulated
    # Rows the reader left out or forward-filled for missing cells (--missing drop / ffill), over all files.
    rows_dropped: int = 0
    rows_filled: int = 0

    def describe(self) -> dict[str, Any]:
        """The `data` entry of meta.json."""
        return {
            "paths": list(self.sources),
            "sha256": self.sha256,
            "rows": self.rows,
            "anomalous_rows_dropped": self.anomalous_rows,
            "missing_rows_dropped": self.rows_dropped,
            "missing_rows_filled": self.rows_filled,
            "split_rows": {name: sum(len(run) for run in runs) for name, runs in self.splits.items()},
            "simulated": self.simulated,
        }


def load_training_tables(
    path: Path | None, sim_rows: int = 20_000, seed: int = 0, read: ReadOptions = DEFAULT_READ
) -> list[Table]:
    """The tables under `path` (a CSV file or a folder of them), or the simulated plant when `path` is None."""
    if path is None:
        return [simulate_plant(sim_rows, seed=seed)]
    return read_tables(path, read)


def load_training_data(
    path: Path | None,
    sim_rows: int = 20_000,
    seed: int = 0,
    fractions: Sequence[float] | Callable[[int], Sequence[float]] = SPLIT_FRACTIONS,
    read: ReadOptions = DEFAULT_READ,
) -> TrainingData:
    """Read the tables and split each chronologically; `fractions` may be a function of the total rows."""
    tables = load_training_tables(path, sim_rows=sim_rows, seed=seed, read=read)
    if callable(fractions):
        fractions = fractions(sum(t.rows for t in tables))
    channels = check_channels(tables)
    if path is None:
        digest = sha256_array(tables[0].values, seed)
        simulated: dict[str, int] | None = {"rows": sim_rows, "seed": seed}
    else:
        digest = sha256_files([Path(t.path) for t in tables])
        simulated = None
    splits: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    context: dict[str, list[tuple[np.ndarray, int]]] = {name: [] for name in SPLITS}
    anomalous = 0
    for table in tables:
        labels = table.labels if table.labels is not None else np.zeros(table.rows, dtype=np.int8)
        anomalous += int(labels.sum())
        for name, part in zip(SPLITS, split_rows(table.rows, fractions), strict=True):
            splits[name].extend(normal_runs(table.values[part], labels[part]))
            context[name].extend(_runs_with_context(table.values, labels, part))
    if anomalous:
        logger.info("dropped %d rows labelled anomalous; training is on normal rows only", anomalous)
    return TrainingData(
        channels=channels,
        sources=tuple(t.path for t in tables),
        sha256=digest,
        rows=sum(t.rows for t in tables),
        anomalous_rows=anomalous,
        sample_period_s=sample_period(tables),
        splits=splits,
        context=context,
        simulated=simulated,
        rows_dropped=sum(t.rows_dropped for t in tables),
        rows_filled=sum(t.rows_filled for t in tables),
    )


def _runs_with_context(values: np.ndarray, labels: np.ndarray, part: slice) -> list[tuple[np.ndarray, int]]:
    """The normal runs of `values[part]`, each extended back over the normal rows that precede it."""
    abnormal = np.flatnonzero(labels != 0)
    out = []
    for run in normal_runs(np.arange(part.start, part.stop), labels[part]):
        first, stop = int(run[0]), int(run[-1]) + 1
        before = abnormal[abnormal < first]
        start = int(before[-1]) + 1 if before.size else 0
        out.append((values[start:stop], first - start))
    return out


def holdout_windows(
    runs: Sequence[tuple[np.ndarray, int]],
    window: int,
    max_windows: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every stride-1 window that ends in a run's own rows, and how many of its newest rows are the run's.

    A window may start in the `lead` rows before its run; those are context the model may have been fit
    on. Export keeps the windows whose scored rows are all unseen, so a threshold is calibrated on scores of
    rows the model never fit, however many rows each window reads. Over `max_windows`, a seeded random
    subset is kept, in order.

    >>> w, unseen = holdout_windows([(np.arange(6.0)[:, None], 3)], window=3)
    >>> w[:, :, 0].tolist(), unseen.tolist()
    ([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, 5.0]], [1, 2, 3])
    """
    views, unseen = [], []
    for rows, lead in runs:
        start = max(0, lead - (window - 1))
        segment, lead = rows[start:], lead - start
        if len(segment) < window:
            continue
        view = sliding_windows(segment, window, 1)
        views.append(view)
        unseen.append(np.clip(np.arange(len(view)) + window - lead, 0, window))
    if not views:
        channels = runs[0][0].shape[1] if runs else 0
        return np.empty((0, window, channels), dtype=np.float32), np.empty(0, dtype=np.int64)
    out, keep = _gather(views, window, views[0].shape[2], max_windows, rng)
    return out, np.concatenate(unseen).astype(np.int64)[keep]


def check_channels(tables: Sequence[Table]) -> tuple[str, ...]:
    if not tables:
        msg = "expected at least one table of training data, got none"
        raise ConfigError(msg)
    first = tables[0]
    for table in tables[1:]:
        if table.channels != first.channels:
            msg = (
                f"{table.path}: channels {list(table.channels)} differ from {list(first.channels)} in "
                f"{first.path}; every training file needs the same channels in the same order"
            )
            raise ConfigError(msg)
    return first.channels


def sample_period(tables: Sequence[Table]) -> float:
    periods = [infer_sample_period(t.timestamps) for t in tables if t.rows >= 2]
    if not periods:
        msg = f"cannot infer a sample period from {[t.path for t in tables]}: expected files with two or more rows"
        raise ConfigError(msg)
    period = float(np.median(periods))
    if max(periods) > 1.01 * min(periods):
        logger.warning("sample periods differ between files (%s..%s s); using %s s", min(periods), max(periods), period)
    return period


def split_rows(rows: int, fractions: Sequence[float] = SPLIT_FRACTIONS) -> list[slice]:
    """Consecutive slices of `rows` with the given fractions (chronological: train, then val, then hold-out)."""
    bounds = np.round(np.cumsum([0.0, *fractions]) / sum(fractions) * rows).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def normal_runs(values: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """The runs of consecutive rows labelled 0, as views of `values`."""
    normal = np.concatenate([[False], labels == 0, [False]])
    edges = np.flatnonzero(np.diff(normal.astype(np.int8)))
    return [values[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def fit_normalization(runs: Sequence[np.ndarray], floor_rel: float = STD_FLOOR_REL) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and floored std over the rows of `runs` (the training split only).

    The std is at least `floor_rel` times the channel's mean magnitude: a deviation smaller than that share
    of a reading is treated as noise however still the channel was while the model was fit.
    """
    rows = np.concatenate(list(runs), axis=0)
    mean = rows.mean(axis=0)
    std = np.maximum(rows.std(axis=0), np.maximum(STD_FLOOR_ABS, floor_rel * np.abs(mean)))
    return mean, std


def check_windows(dataset: TrainingData, window: int, strides: dict[str, int], option: str) -> None:
    """Every split needs at least one window; the message starts with the option to change."""
    for name, stride in strides.items():
        if count_windows(dataset.splits[name], window, stride) == 0:
            rows = sum(len(run) for run in dataset.splits[name])
            msg = (
                f"{option}: the {name} split has {rows} normal rows in runs too short for one window of {window} "
                f"({dataset.rows} rows in all); use a smaller window or more data"
            )
            raise ConfigError(msg)


def count_windows(runs: Sequence[np.ndarray], window: int, stride: int) -> int:
    return sum(window_count(len(run), window, stride) for run in runs)


def make_windows(
    runs: Sequence[np.ndarray],
    window: int,
    stride: int,
    max_windows: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Float32 (n, window, channels) windows of every run; a seeded random subset when over `max_windows`."""
    views = [sliding_windows(run, window, stride) for run in runs]
    return _gather(views, window, runs[0].shape[1] if runs else 0, max_windows, rng)[0]


def _gather(
    views: Sequence[np.ndarray], window: int, channels: int, max_windows: int | None, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """A float32 copy of the windows of `views`, one after another, or of a seeded random subset of
    `max_windows` of them in order; and the indices kept.

    The subset is chosen before anything is copied and the copy goes view by view, so stride-1 views of a
    long stream are never materialized whole.
    """
    offsets = np.cumsum([0] + [len(v) for v in views])
    total = int(offsets[-1])
    if max_windows is None or total <= max_windows:
        keep = np.arange(total)
    else:
        keep = np.sort((rng or np.random.default_rng(0)).choice(total, size=max_windows, replace=False))
    out = np.empty((len(keep), window, channels), dtype=np.float32)
    for i, view in enumerate(views):
        lo, hi = np.searchsorted(keep, [offsets[i], offsets[i + 1]])
        out[lo:hi] = view[keep[lo:hi] - offsets[i]]
    return out, keep


def normalize(windows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out: np.ndarray = ((windows - mean) / std).astype(np.float32)
    return out


def sha256_array(values: np.ndarray, seed: int) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    digest.update(str(seed).encode())
    return digest.hexdigest()
