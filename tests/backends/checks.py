"""Checks every runtime backend must pass; `yield_checks` lists them for the parametrized conformance test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import CHANNELS, WINDOW, build_model, reference_scores, stream

from edgevae.agent.backends import Backend, create_backend
from edgevae.core.errors import BackendError, ModelLoadError

Check = Callable[[Backend, str, Path], None]


def batch_of(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = stream(WINDOW * n, fault=("flow", WINDOW, 2 * WINDOW)) + rng.normal(0, 0.1, (WINDOW * n, len(CHANNELS)))
    return values.reshape(n, WINDOW, len(CHANNELS)).astype(np.float32)


def check_shapes_and_dtypes(backend: Backend, key: str, tmp: Path) -> None:
    for n in (1, 3, 300):  # one window, a few, more than a typical engine profile's optimum
        out = backend.run(batch_of(n))
        assert out.score.shape == (n,)
        assert out.score.dtype == np.float32
        assert out.channel_error.shape == (n, len(CHANNELS))
        assert out.channel_error.dtype == np.float32


def check_finite(backend: Backend, key: str, tmp: Path) -> None:
    out = backend.run(batch_of(16))
    assert np.isfinite(out.score).all()
    assert np.isfinite(out.channel_error).all()
    assert (out.channel_error >= 0).all()


def check_matches_reference(backend: Backend, key: str, tmp: Path) -> None:
    batch = batch_of(32)
    out = backend.run(batch)
    cpu = create_backend(tmp / "model.onnx", "onnxruntime-cpu")
    try:
        ref = cpu.run(batch)
    finally:
        cpu.close()
    np.testing.assert_allclose(out.score, ref.score, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(out.channel_error, ref.channel_error, rtol=1e-3, atol=1e-5)
    numpy_scores, _ = reference_scores(batch.reshape(-1, len(CHANNELS)), WINDOW, WINDOW)
    np.testing.assert_allclose(out.score, numpy_scores, rtol=1e-3, atol=1e-5)


def check_rejects_a_graph_breaking_the_contract(backend: Backend, key: str, tmp: Path) -> None:
    import onnx

    model = onnx.load(str(tmp / "model.onnx"))
    model.graph.output[0].name = "anomaly"
    model.graph.node[-1].output[0] = "anomaly"
    bad = tmp / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelLoadError, match="score"):
        create_backend(bad, key).close()


def check_close_is_idempotent(backend: Backend, key: str, tmp: Path) -> None:
    backend.close()
    backend.close()
    with pytest.raises(BackendError):
        backend.run(batch_of(1))


def yield_checks() -> Iterator[Check]:
    yield check_shapes_and_dtypes
    yield check_finite
    yield check_matches_reference
    yield check_rejects_a_graph_breaking_the_contract
    yield check_close_is_idempotent  # last: it closes the backend


def model_dir(tmp: Path) -> Path:
    build_model(tmp / "model.onnx")
    return tmp
