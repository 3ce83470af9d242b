"""Runtime backends, chosen by name from the registry below.

Adding a runtime means adding one module with a `KEY`, a config dataclass whose `type` is that key, and a
class satisfying `edgevae.agent.backends.base.Backend`, then one line in `_REGISTRY`. Backends whose runtime is not
installed are listed but fail to load with a message that says what to install.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from edgevae.agent.backends.base import Backend, ScoreOutputs
from edgevae.agent.schema import build
from edgevae.core.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

# key -> (module, backend class, config class). Modules are imported on use, so a missing optional
# runtime (TensorRT, CUDA) never stops the agent from starting with another backend.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "onnxruntime-cpu": ("edgevae.agent.backends.ort_cpu", "OrtCpuBackend", "OrtCpuBackendConfig"),
    "onnxruntime-cuda": ("edgevae.agent.backends.ort_cuda", "OrtCudaBackend", "OrtCudaBackendConfig"),
    "tensorrt": ("edgevae.agent.backends.tensorrt", "TensorRTBackend", "TensorRTBackendConfig"),
}


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def backend_config(key: str, options: dict[str, Any] | None = None) -> Any:
    """Build the config dataclass of backend `key` from a plain dict (e.g. a TOML table).

    Raises SchemaError naming each unknown key or bad value relative to the table.
    """
    module = _import(key)
    cls = getattr(module, _REGISTRY[key][2])
    return build(cls, {"type": key, **(options or {})})


def create_backend(model_path: Path, key: str = "onnxruntime-cpu", options: dict[str, Any] | None = None) -> Backend:
    module = _import(key)
    cls = getattr(module, _REGISTRY[key][1])
    backend: Backend = cls(model_path, backend_config(key, options))
    return backend


def _import(key: str) -> Any:
    if key not in _REGISTRY:
        msg = f"backend must be one of {available_backends()}, got {key!r}"
        raise ConfigError(msg)
    try:
        return importlib.import_module(_REGISTRY[key][0])
    except ImportError as exc:
        msg = f"backend {key!r} needs a runtime that is not installed here: {exc}"
        raise ModelLoadError(msg) from exc


__all__ = ["Backend", "ScoreOutputs", "available_backends", "backend_config", "create_backend"]
