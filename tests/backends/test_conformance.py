"""Every registered backend that loads on this machine passes the same checks; the others skip saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from checks import Check, model_dir, yield_checks

from edgevae.agent.backends import Backend, available_backends, create_backend
from edgevae.core.errors import ModelLoadError


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


def test_cpu_backend_is_always_available() -> None:
    assert "onnxruntime-cpu" in available_backends()


def test_tensorrt_engines_are_named_by_model_version_and_gpu() -> None:
    from edgevae.agent.backends.tensorrt import engine_name

    name = engine_name("ab" * 32, "10.13.3", "NVIDIA Jetson Orin (16GB)")
    assert name == "abababababababab-trt10.13.3-nvidia-jetson-orin-16gb.plan"
    assert engine_name("cd" * 32, "10.13.3", "NVIDIA Jetson Orin (16GB)") != name  # another model
    assert engine_name("ab" * 32, "10.14.1", "NVIDIA Jetson Orin (16GB)") != name  # another TensorRT
