"""Every registered backend that loads on this machine passes the same checks, on a hand-made graph and on a
model `edgevae train` trained; the others say what to install."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from checks import Check, model_dir, yield_checks

from edgevae.agent.backends import Backend, ScoreOutputs, available_backends, create_backend
from edgevae.core.errors import BackendError, ModelLoadError
from edgevae.export._rundir import load_run
from edgevae.export.onnx import to_onnx
from edgevae.export.parity import PARITY_RTOL, relative_error, torch_scores

DEFAULT = "onnxruntime-cpu"


def _param(key: str) -> object:
    return pytest.param(key, marks=pytest.mark.tensorrt) if key == "tensorrt" else key


@pytest.fixture(params=[_param(key) for key in available_backends()])
def loaded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, str, Path]]:
    key: str = request.param
    tmp = model_dir(tmp_path)
    try:
        backend = create_backend(tmp / "model.onnx", key)
    except ModelLoadError as exc:
        pytest.skip(f"{key} does not load here: {exc}")
    yield backend, key, tmp
    backend.close()


@pytest.mark.parametrize("check", list(yield_checks()), ids=lambda c: c.__name__)
def test_backend_conformance(loaded: tuple[Backend, str, Path], check: Check) -> None:
    backend, key, tmp = loaded
    check(backend, key, tmp)


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, ScoreOutputs]:
    """The FP32 ONNX export of a run `edgevae train` wrote, some of its windows, and torch's scores of them."""
    run = load_run(trained_run)
    graph = run.graph
    path = to_onnx(graph, tmp_path_factory.mktemp("exported") / "model.onnx", graph.window, graph.channels)
    windows = np.concatenate([run.holdout[:40], run.train_sample[:23]])  # 63: not a power of two
    return path, windows, torch_scores(graph, windows)


# The default backend is a case even if it left the registry: creating it then fails the test.
@pytest.mark.slow
@pytest.mark.parametrize("key", [_param(key) for key in sorted({DEFAULT, *available_backends()})])
def test_every_backend_scores_an_exported_model_or_says_what_to_install(
    exported: tuple[Path, np.ndarray, ScoreOutputs], key: str, tmp_path: Path
) -> None:
    path, windows, expected = exported
    options = {"cache_dir": str(tmp_path)} if key == "tensorrt" else None
    backend = _load_or_reason(path, key, options)
    if isinstance(backend, str):
        # The default backend loads wherever the agent installs; any other may be missing its runtime, and
        # then the error names the backend and the package to install.
        assert key != DEFAULT, f"{DEFAULT} must always load: {backend}"
        assert key in backend
        assert re.search(r"[Ii]nstall '?[A-Za-z][\w.-]+", backend), f"{key}: no package to install in {backend!r}"
        return
    try:
        out = backend.run(windows)
        single = backend.run(windows[:1])
    finally:
        backend.close()
    assert out.score.shape == (len(windows),)
    assert out.channel_error.shape == (len(windows), windows.shape[2])
    assert out.score.dtype == out.channel_error.dtype == np.float32
    assert relative_error(out.score, expected.score).max() <= PARITY_RTOL
    assert relative_error(out.channel_error, expected.channel_error).max() <= PARITY_RTOL
    # a window scores the same alone as in a batch
    assert relative_error(single.score, out.score[:1]).max() <= PARITY_RTOL
    backend.close()
    with pytest.raises(BackendError):
        backend.run(windows[:1])


def _load_or_reason(path: Path, key: str, options: dict[str, Any] | None) -> Backend | str:
    """The loaded backend, or the message of the ModelLoadError that says why it does not load here."""
    try:
        return create_backend(path, key, options)
    except ModelLoadError as exc:
        return str(exc)


def test_tensorrt_engines_are_named_by_model_version_and_gpu() -> None:
    from edgevae.agent.backends.tensorrt import engine_name

    name = engine_name("ab" * 32, "10.13.3", "NVIDIA Jetson Orin (16GB)")
    assert name == "abababababababab-trt10.13.3-nvidia-jetson-orin-16gb.plan"
    assert engine_name("cd" * 32, "10.13.3", "NVIDIA Jetson Orin (16GB)") != name  # another model
    assert engine_name("ab" * 32, "10.14.1", "NVIDIA Jetson Orin (16GB)") != name  # another TensorRT
