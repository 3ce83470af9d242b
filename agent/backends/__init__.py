"""Runtime backends, chosen by name from the registry below.

The registry names each backend's module and class as strings and holds its options model, so listing the
backends and validating `model.backend` (as `--check-config` does) imports no runtime: a backend's module,
and with it onnxruntime or TensorRT, is imported only when `create_backend` makes one. Adding a runtime
means one module with a `KEY` and a class satisfying `edgevae.agent.backends.base.Backend`, one options model
here whose `type` is that key, and one line in `REGISTRY`. Backends whose runtime is not installed are
listed but fail to load with a message that says what to install.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgevae.agent.backends.base import Backend, ScoreOutputs
from edgevae.agent.backends.tensorrt_engine import MAX_BATCH, OPT_BATCH, WORKSPACE_MB
from edgevae.core.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)


class BackendOptions(BaseModel):
    """The `model.backend` table; the same rules as every config table (`edgevae.agent.config.Table`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


TYPE = "the backend that runs the model; the other keys of this table are its options"


class OrtCpuBackendConfig(BackendOptions):
    type: Literal["onnxruntime-cpu"] = Field(default="onnxruntime-cpu", description=TYPE)
    # One thread measured fastest for models this small, and leaves a core to MQTT and the broker.
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")


class OrtCudaBackendConfig(BackendOptions):
    type: Literal["onnxruntime-cuda"] = Field(default="onnxruntime-cuda", description=TYPE)
    device_id: int = Field(default=0, ge=0, description="CUDA device index")
    threads: int = Field(default=1, ge=1, description="intra-op threads for nodes left on the CPU")


class TensorRTBackendConfig(BackendOptions):
    type: Literal["tensorrt"] = Field(default="tensorrt", description=TYPE)
    plan: str = Field(
        default="", description="engine built on this device; empty: the bundle's model.plan, else built and cached"
    )
    cache_dir: str = Field(
        default="",
        description="where built engines are kept; empty: $CACHE_DIRECTORY/tensorrt, else ~/.cache/edgevae/tensorrt",
    )
    device_id: int = Field(default=0, ge=0, description="CUDA device index")
    max_batch: int = Field(default=MAX_BATCH, ge=1, description="largest batch of the engine's profile")
    opt_batch: int = Field(default=OPT_BATCH, ge=1, description="batch size TensorRT tunes for")
    workspace_mb: int = Field(default=WORKSPACE_MB, ge=16, description="builder workspace limit in MiB")


# The `model.backend` table: one of the options models, told apart by `type`.
BackendConfig = Annotated[
    OrtCpuBackendConfig | OrtCudaBackendConfig | TensorRTBackendConfig, Field(discriminator="type")
]
DEFAULT_BACKEND = "onnxruntime-cpu"


class BackendSpec(NamedTuple):
    module: str  # imported only by create_backend, so a missing runtime stops only that backend
    cls: str
    options: type[BackendOptions]


REGISTRY: dict[str, BackendSpec] = {
    "onnxruntime-cpu": BackendSpec("edgevae.agent.backends.ort_cpu", "OrtCpuBackend", OrtCpuBackendConfig),
    "onnxruntime-cuda": BackendSpec("edgevae.agent.backends.ort_cuda", "OrtCudaBackend", OrtCudaBackendConfig),
    "tensorrt": BackendSpec("edgevae.agent.backends.tensorrt", "TensorRTBackend", TensorRTBackendConfig),
}


def available_backends() -> list[str]:
    return sorted(REGISTRY)


def backend_options(key: str, options: Mapping[str, Any] | BackendOptions | None = None) -> BackendOptions:
    """The options model of backend `key`, validated from a plain table (or checked, if already built)."""
    spec = _spec(key)
    if isinstance(options, BackendOptions):
        if not isinstance(options, spec.options):
            msg = f"options {type(options).__name__} are not for backend {key!r}"
            raise ConfigError(msg)
        return options
    try:
        return spec.options.model_validate({"type": key, **(options or {})})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['input']!r}: {e['msg']}" for e in exc.errors())
        msg = f"bad options for backend {key!r}: {problems}"
        raise ConfigError(msg) from None


def create_backend(
    model_path: Path, key: str = DEFAULT_BACKEND, options: Mapping[str, Any] | BackendOptions | None = None
) -> Backend:
    cfg = backend_options(key, options)
    spec = REGISTRY[key]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        msg = f"backend {key!r} needs a runtime that is not installed here: {exc}"
        raise ModelLoadError(msg) from exc
    backend: Backend = getattr(module, spec.cls)(model_path, cfg)
    return backend


def _spec(key: str) -> BackendSpec:
    if key not in REGISTRY:
        msg = f"backend must be one of {available_backends()}, got {key!r}"
        raise ConfigError(msg)
    return REGISTRY[key]


__all__ = [
    "REGISTRY",
    "Backend",
    "BackendConfig",
    "BackendOptions",
    "BackendSpec",
    "OrtCpuBackendConfig",
    "OrtCudaBackendConfig",
    "ScoreOutputs",
    "TensorRTBackendConfig",
    "available_backends",
    "backend_options",
    "create_backend",
]
