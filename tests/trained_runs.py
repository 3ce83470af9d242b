"""Run directories written by `edgevae train` itself, on a small CSV of synthetic sensor readings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevae.agent.table import Table, write_table
from edgevae.cli.main import main

CHANNELS = ("temp_c", "pressure_hpa", "flow_lps", "vibration_g")
WINDOW, STRIDE = 32, 8
ROWS = 6000
CALIBRATION_WINDOWS = 250
T0 = 1_704_067_200.0
# Very different raw scales, so a graph that forgets to normalize scores visibly wrong.
_OFFSET = np.array([60.0, 1013.0, 2.5, 0.02])
_SCALE = np.array([4.0, 25.0, 0.4, 0.005])
# Small and brief: each run trains in a few seconds on one thread. Sizes are explicit so that a change of
# the product's defaults changes what the tests check, not how long they take.
SMALL = [
    "--window", str(WINDOW), "--stride", str(STRIDE), "--hidden", "32", "--latent", "4",
    "--epochs", "4", "--batch-size", "64", "--lr", "3e-3", "--max-train-windows", "3000",
    "--calibration-windows", str(CALIBRATION_WINDOWS),
]  # fmt: skip
SYSTEM = ["--threads", "1", "--device", "cpu", "--no-progress", "--seed", "0"]


def synthetic_readings(rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 4) correlated channels in raw units: two latent oscillations mixed, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    latent = np.stack([np.sin(2 * np.pi * t / 48.0), np.sin(2 * np.pi * t / 17.0 + 0.7)], axis=1)
    mix = np.array([[1.0, 0.2], [0.8, -0.5], [-0.3, 1.0], [0.5, 0.5]])
    values = latent @ mix.T + 0.15 * rng.standard_normal((rows, len(CHANNELS)))
    return np.asarray(values * _SCALE + _OFFSET, dtype=np.float64)


def anomalous_windows(windows: np.ndarray, seed: int = 1) -> np.ndarray:
    """Copies of `windows` with a level shift on one random channel over the second half of each window."""
    rng = np.random.default_rng(seed)
    out = windows.copy()
    half = windows.shape[1] // 2
    for w in out:
        c = int(rng.integers(windows.shape[2]))
        w[half:, c] += 3.0 * _SCALE[c]
    return np.asarray(out)


def write_readings(path: Path, rows: int = ROWS, seed: int = 0) -> Path:
    """The synthetic readings as a CSV that `edgevae train --data` reads, one row per second."""
    timestamps = T0 + np.arange(rows, dtype=np.float64)
    write_table(Table(str(path), timestamps, synthetic_readings(rows, seed), CHANNELS, None), path)
    return path


def train_run(root: Path, *flags: str) -> Path:
    """`edgevae train --data <synthetic CSV> --out <root>/run` with the small settings and any further flags."""
    root.mkdir(parents=True, exist_ok=True)
    data = write_readings(root / "readings.csv")
    out = root / "run"
    code = main(["train", "--data", str(data), "--out", str(out), *SMALL, *SYSTEM, *flags])
    assert code == 0, f"edgevae train exited {code}"
    return out
