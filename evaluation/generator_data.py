"""The windows a generator report compares: real ones (a table of normal operation, the simulated plant or the
Sines benchmark) and synthetic ones (sampled from a generator run folder, or read from an `edgevae augment`
file).

Real windows come in two sets. `train` are the windows a generator is fit on: stride-1 windows of the train
split that `edgevae train` takes from the same data (normal rows only, chronological splits). `holdout` are
real windows it never saw: the hold-out split (the validation split when the data is too short for one), or
for Sines a draw with the next seed. The fidelity figures compare the synthetic windows with `train`; the
memorization check also needs `holdout`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevae.core.errors import DataError
from edgevae.training.config import TrainConfig, resolve_splits
from edgevae.training.data import check_windows, load_training_data, make_windows
from edgevae.training.sines import SINES_SAMPLES, sines

# Caps as `edgevae train`'s: enough for any figure, and memory stays flat however long the data.
MAX_TRAIN_WINDOWS = 200_000
MAX_HOLDOUT_WINDOWS = 50_000
SINES_HOLDOUT = 2000


@dataclass(frozen=True)
class RealWindows:
    train: np.ndarray  # (n, window, channels) raw units: what a generator is fit on
    holdout: np.ndarray  # (m, window, channels) raw units: real windows it never saw
    channels: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class SyntheticWindows:
    windows: np.ndarray  # (n, window, channels) raw units
    channels: tuple[str, ...]
    source: str
    kind: str  # the generator's kind, or "file" for an .npz that does not say which generator wrote it


def sines_windows(window: int, channels: tuple[str, ...], n: int = SINES_SAMPLES, seed: int = 0) -> RealWindows:
    """The Sines benchmark as the papers draw it (n windows, `seed`), and held-out windows from seed + 1."""
    train = sines(n, window, len(channels), seed=seed)
    holdout = sines(SINES_HOLDOUT, window, len(channels), seed=seed + 1)
    return RealWindows(train, holdout, channels, f"Sines ({n} windows, seed {seed})")


def table_windows(data: Path | None, window: int, sim_rows: int = 50_000, sim_seed: int = 0) -> RealWindows:
    """Windows of `edgevae train --data DATA`'s splits (the simulated plant when `data` is None)."""
    cfg = TrainConfig(data=data, out=Path(), sim_rows=sim_rows, sim_seed=sim_seed)
    dataset = load_training_data(data, sim_rows, sim_seed, fractions=lambda rows: resolve_splits(cfg, rows))
    holdout_split = "holdout" if dataset.splits["holdout"] else "val"
    check_windows(dataset, window, {"train": 1, holdout_split: 1}, option=f"the generator's window {window}")
    rng = np.random.default_rng(0)
    train = make_windows(dataset.splits["train"], window, 1, MAX_TRAIN_WINDOWS, rng)
    holdout = make_windows(dataset.splits[holdout_split], window, 1, MAX_HOLDOUT_WINDOWS, rng)
    source = ", ".join(dataset.sources) + f" ({dataset.rows} rows, {dataset.anomalous_rows} labelled anomalous)"
    return RealWindows(train, holdout, dataset.channels, source)


def sample_generator(run_dir: Path, n: int, seed: int = 0) -> SyntheticWindows:
    """`n` windows from a generator run folder (`load_generator(run_dir).sample(n, seed)`)."""
    from edgevae.training.generators import load_generator

    generator = load_generator(run_dir)
    windows = generator.sample(n, seed=seed)
    return SyntheticWindows(windows, generator.meta.channels, f"{run_dir}, sample seed {seed}", generator.meta.kind)


def read_synthetic(path: Path, n: int | None = None, seed: int = 0) -> SyntheticWindows:
    """The `windows` and `channels` of an `edgevae augment` file (and the generator it names, if it does); a
    seeded subset of `n` when it holds more."""
    remedy = "give an .npz written by `edgevae augment`, with `windows` (n, window, channels) and `channels`"
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted({"windows", "channels"} - set(npz.files))
            if missing:
                msg = f"{path}: no {' or '.join(missing)} array (it holds {', '.join(npz.files) or 'none'})"
                raise DataError(msg, remedy=remedy)
            windows, channels = np.asarray(npz["windows"], dtype=np.float32), tuple(str(c) for c in npz["channels"])
            provenance = json.loads(str(npz["generator"])) if "generator" in npz.files else {}
    except (OSError, ValueError) as exc:
        msg = f"{path}: cannot read synthetic windows ({exc})"
        raise DataError(msg, remedy=remedy) from exc
    if windows.ndim != 3 or windows.shape[-1] != len(channels):
        msg = f"{path}: windows of shape {windows.shape} with {len(channels)} channel names"
        raise DataError(msg, remedy=remedy)
    if n is not None and len(windows) > n:
        windows = windows[np.sort(np.random.default_rng(seed).choice(len(windows), size=n, replace=False))]
    if not isinstance(provenance, dict) or "kind" not in provenance:
        return SyntheticWindows(windows, channels, str(path), "file")
    source = f"{path}, sampled from {provenance.get('path')}, sample seed {provenance.get('sample_seed')}"
    return SyntheticWindows(windows, channels, source, str(provenance["kind"]))


def align_channels(synthetic: SyntheticWindows, real: RealWindows) -> SyntheticWindows:
    """The synthetic windows with their channels in the real windows' order; the same set is required."""
    window = real.train.shape[1]
    if synthetic.windows.shape[1] != window:
        msg = f"synthetic windows are {synthetic.windows.shape[1]} steps long, the real ones {window}"
        raise DataError(msg, remedy="window the real data at the generator's window length")
    if synthetic.channels == real.channels:
        return synthetic
    if sorted(synthetic.channels) != sorted(real.channels):
        msg = f"synthetic channels {list(synthetic.channels)} are not the real data's {list(real.channels)}"
        raise DataError(msg, remedy="compare with the data the generator was trained on")
    order = [synthetic.channels.index(c) for c in real.channels]
    return SyntheticWindows(synthetic.windows[..., order], real.channels, synthetic.source, synthetic.kind)
