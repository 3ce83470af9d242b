"""Synthetic window files: `edgevae augment` writes them from a generator, `edgevae train --augment` mixes
them into a VAE's training windows.

A file is an .npz with `windows` (n, window, channels) float32 in raw sensor units, `channels` (the names in
order) and `generator` (a JSON string: the run folder, its kind, sampler and the sampling seed).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_REMEDY = "give an .npz written by `edgevae augment`"


def write_synthetic(
    generator_dir: Path,
    n: int,
    out: Path,
    seed: int = 0,
    batch: int = 1024,
    ddim_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Sample `n` windows from the generator in `generator_dir` into `out` (.npz); returns `out`."""
    from tqdm import tqdm

    from edgevae.training.generators import GeneratorMeta, load_generator

    if out.suffix != ".npz":
        raise ConfigError(f"--out {out}: expected a file name ending in .npz")
    for name, value in (("--n", n), ("--batch", batch), ("--ddim-steps", ddim_steps or 1)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    generator = load_generator(generator_dir)
    if ddim_steps is not None:
        if generator.meta.kind != "diffusion":
            raise ConfigError(f"--ddim-steps: {generator_dir} is a {generator.meta.kind}, not a diffusion generator")
        from edgevae.training.generators.diffusion import load

        generator = load(generator_dir, steps=ddim_steps)
    meta: GeneratorMeta = generator.meta
    with tqdm(total=n, desc="sampling", unit="window", disable=not (progress and sys.stderr.isatty())) as bar:
        windows = generator.sample(n, seed=seed, batch=batch, on_batch=bar.update)
    sampler = dict(meta.sampler) | ({"ddim_steps": ddim_steps} if ddim_steps is not None else {})
    provenance = {"path": str(generator_dir), "kind": meta.kind, "sampler": sampler, "sample_seed": seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, windows=windows, channels=np.array(meta.channels), generator=np.array(json.dumps(provenance)))
    logger.info("wrote %d windows of %d x %d to %s", n, meta.window, len(meta.channels), out)
    return out


def parse_augment(spec: str) -> tuple[Path, float]:
    """`FILE.npz[:RATIO]` -> (file, ratio); the ratio is synthetic windows per real training window, 1.0 if omitted.

    >>> parse_augment("synthetic.npz"), parse_augment("runs/s.npz:0.5")
    ((PosixPath('synthetic.npz'), 1.0), (PosixPath('runs/s.npz'), 0.5))
    """
    path, _, ratio = spec.rpartition(":")
    if not path:
        return Path(spec), 1.0
    try:
        value = float(ratio)
    except ValueError:
        return Path(spec), 1.0  # the colon is part of the file name
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"--augment {spec}: the ratio must be a number > 0, got {ratio}")
    return Path(path), value


def read_synthetic(path: Path) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    """The windows, channel names and generator provenance of a synthetic window file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            windows = np.asarray(npz["windows"], dtype=np.float32)
            channels = tuple(str(c) for c in npz["channels"])
            provenance = json.loads(str(npz["generator"])) if "generator" in npz.files else {}
    except (OSError, ValueError) as exc:
        msg = f"{path}: cannot read synthetic windows ({exc})"
        raise DataError(msg, remedy=_REMEDY) from exc
    except KeyError as exc:
        msg = f"{path}: no {exc} array"
        raise DataError(msg, remedy=_REMEDY) from exc
    if windows.ndim != 3 or windows.shape[-1] != len(channels):
        msg = f"{path}: windows of shape {windows.shape} with {len(channels)} channel names"
        raise DataError(msg, remedy=_REMEDY)
    return windows, channels, provenance


def mix_synthetic(
    train: np.ndarray, spec: str, channels: tuple[str, ...], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """The raw training windows followed by round(ratio * len(train)) synthetic ones (a seeded subset of the
    file when it holds more), channels put in the training data's order; and the `augment` entry of meta.json.
    """
    path, ratio = parse_augment(spec)
    windows, synthetic_channels, provenance = read_synthetic(path)
    if sorted(synthetic_channels) != sorted(channels):
        msg = f"--augment {path}: channels {list(synthetic_channels)}, the training data's are {list(channels)}"
        raise DataError(msg, remedy="sample from a generator trained on the same channels")
    if windows.shape[1] != train.shape[1]:
        msg = f"--augment {path}: windows of {windows.shape[1]} rows, the training windows are {train.shape[1]}"
        raise DataError(
            msg, remedy=f"train with --window {windows.shape[1]}, or a generator with --window {train.shape[1]}"
        )
    wanted = round(ratio * len(train))
    if wanted > len(windows):
        msg = f"--augment {spec}: {wanted} synthetic windows wanted ({ratio} per each of {len(train)} real ones)"
        msg += f", the file holds {len(windows)}"
        raise DataError(msg, remedy=f"write more with `edgevae augment --n {wanted}`, or lower the ratio")
    if not np.isfinite(windows).all():
        raise DataError(f"--augment {path}: the windows hold NaN or infinite values", remedy=_REMEDY)
    keep = np.sort(rng.choice(len(windows), size=wanted, replace=False)) if wanted < len(windows) else slice(None)
    chosen = windows[keep][..., [synthetic_channels.index(c) for c in channels]]
    info = {"path": str(path), "ratio": ratio, "synthetic_windows": wanted, "real_windows": len(train),
            "file_windows": len(windows), "generator": provenance}  # fmt: skip
    logger.info("mixing %d synthetic windows from %s into %d real training windows", wanted, path, len(train))
    return np.concatenate([train, chosen.astype(np.float32)]), info
