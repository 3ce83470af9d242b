"""Training with synthetic windows in the evaluation: `edgevae evaluate --augment gan|diffusion`.

Each model the evaluation trains gets a generator of its own, trained on exactly the rows the model fits
(`edgevae train-generator --data` on the same CSV, so the same normal rows and train split), sampled with
`edgevae augment`, and mixed into the model's training windows with `edgevae train --augment FILE:RATIO`.
Everything else (validation, calibration, threshold, scoring) is the plain evaluation's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgevae.evaluation.commands import flag_value, run_train, run_train_generator

logger = logging.getLogger(__name__)

AUGMENT_KINDS = ("gan", "diffusion")
# Windows sampled per row of the fit data: at stride 1 a CSV of R rows has about R windows, so this covers
# any --augment-ratio up to 4 (edgevae train takes a seeded subset of the file).
SAMPLES_PER_ROW = 4


@dataclass(frozen=True)
class Augmentation:
    kind: str  # "gan" | "diffusion"
    ratio: float = 1.0  # synthetic windows per real training window
    generator_flags: tuple[str, ...] = ()  # extra `edgevae train-generator` flags


def train_augmented(
    augmentation: Augmentation, data: Path, rows: int, out: Path, system: list[str], train_flags: tuple[str, ...]
) -> Path:
    """Train a generator on `data` (a CSV of `rows` rows), sample it, and `edgevae train` with its windows."""
    from edgevae.training.generators.augment import write_synthetic

    started = time.perf_counter()
    seed, threads = flag_value(system, "--seed"), flag_value(system, "--threads")
    window = flag_value(train_flags, "--window")
    generator = run_train_generator(
        ["--kind", augmentation.kind, "--data", str(data), "--out", str(out.with_name(out.name + "-generator")),
         "--seed", str(seed), "--threads", str(threads), "--no-progress", *(["--window", window] if window else []),
         *augmentation.generator_flags]
    )  # fmt: skip
    synthetic = write_synthetic(
        generator, SAMPLES_PER_ROW * rows, out.with_name(out.name + "-synthetic.npz"), progress=False
    )
    spent = time.perf_counter() - started
    logger.debug("%s generator of %s trained and sampled in %.0f s", augmentation.kind, data.name, spent)
    augment = ["--augment", f"{synthetic}:{augmentation.ratio}"]
    return run_train(["--data", str(data), "--out", str(out), *system, *train_flags, *augment])
