"""Golden windows: a few real windows shipped in the bundle with the scores export computed for them.

A device that takes a new model runs them through its own runtime before the model scores anything live:
a bundle that loads but computes something else (another runtime version, a broken kernel, a model and
manifest that do not belong together) fails here instead of in the field. The manifest names the file
and the tolerance (`golden`), and the file is hashed with the others in `files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.backends import Backend

GOLDEN_FILE = "golden.npz"
GOLDEN_WINDOWS = 16
# Relative tolerance on each score. INT8 kernels differ between CPUs (VNNI against AVX2 rounding), so far
# more than float32 summation order; a model that computes something else misses by orders of magnitude.
GOLDEN_RTOL = 2e-2


def write_golden(folder: Path, windows: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Write the windows and their expected scores; returns the manifest's `golden` entry."""
    np.savez(folder / GOLDEN_FILE, windows=windows.astype(np.float32), scores=scores.astype(np.float32))
    return {"file": GOLDEN_FILE, "windows": len(windows), "rtol": GOLDEN_RTOL}


def self_test(backend: Backend, folder: Path, golden: dict[str, Any], threshold: float) -> str | None:
    """Why the model fails its golden windows, or None when every score is within tolerance.

    A score may also miss by a thousandth of the threshold, so that scores near zero do not fail on noise.
    """
    if not golden:
        return "the bundle has no golden windows (manifest `golden`)"
    try:
        with np.load(folder / str(golden["file"]), allow_pickle=False) as data:
            windows, expected = data["windows"], data["scores"]
    except (OSError, KeyError, ValueError) as exc:
        return f"golden windows unreadable: {exc}"
    got = backend.run(windows).score.astype(np.float64)
    rtol = float(golden.get("rtol", GOLDEN_RTOL))
    atol = 1e-3 * abs(threshold)
    bad = ~np.isclose(got, expected.astype(np.float64), rtol=rtol, atol=atol)
    if not np.isfinite(got).all():
        return f"{int((~np.isfinite(got)).sum())} of {len(got)} golden windows score NaN or infinity"
    if bad.any():
        worst = int(np.argmax(np.abs(got - expected) / np.maximum(np.abs(expected), atol)))
        return (
            f"{int(bad.sum())} of {len(got)} golden windows score outside rtol {rtol}: window {worst} scored "
            f"{got[worst]:.6g}, expected {float(expected[worst]):.6g}"
        )
    return None
