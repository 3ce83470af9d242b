"""The self-test a device runs on a bundle's golden windows before a model scores anything live."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.agent.golden import self_test


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    shutil.copytree(bundle, tmp_path / "b")
    return tmp_path / "b"


def rewrite(folder: Path, **change: np.ndarray) -> None:
    with np.load(folder / "golden.npz") as data:
        arrays = {"windows": data["windows"], "scores": data["scores"], **change}
    np.savez(folder / "golden.npz", **arrays)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("as shipped", None),
        ("scores 10 % off", "golden windows score outside rtol"),
        ("a window that overflows", "score NaN or infinity"),
        ("file missing", "golden windows unreadable"),
    ],
)
def test_self_test(copy: Path, case: str, expected: str | None) -> None:
    m = load_bundle(copy).manifest
    with np.load(copy / "golden.npz") as data:
        windows, scores = data["windows"], data["scores"]
    if case == "scores 10 % off":
        rewrite(copy, scores=scores * 1.1)
    elif case == "a window that overflows":
        windows = windows.copy()
        windows[0, 0, 0] = 3e38
        rewrite(copy, windows=windows)
    elif case == "file missing":
        (copy / "golden.npz").unlink()
    backend = create_backend(copy / "model.onnx")
    try:
        got = self_test(backend, copy, m.golden, m.threshold.value)
    finally:
        backend.close()
    assert got is None if expected is None else expected in str(got)


def test_a_bundle_without_golden_windows_is_said(bundle: Path) -> None:
    backend = create_backend(bundle / "model.onnx")
    assert "no golden windows" in str(self_test(backend, bundle, {}, 1.0))
    backend.close()
