"""TensorRT 10 on an NVIDIA GPU: an engine built on the device itself, cached by model, TensorRT version and GPU."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Final

import numpy as np

from edgevae.agent.backends import TensorRTBackendConfig
from edgevae.agent.backends.base import ScoreOutputs
from edgevae.agent.backends.tensorrt_engine import (
    PLAN_NAME,
    TIMING_CACHE_NAME,
    EngineProfile,
    build_engine,
    import_tensorrt,
    trt_logger,
)
from edgevae.agent.bundle import CHANNEL_ERROR_OUTPUT, INPUT_NAME, SCORE_OUTPUT, sha256_file
from edgevae.core.errors import BackendError, ModelLoadError

logger = logging.getLogger(__name__)

KEY: Final = "tensorrt"


def _import_runtime() -> tuple[Any, Any]:
    trt = import_tensorrt()
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6 kept the runtime here
        except ImportError as exc:
            msg = f"backend {KEY!r} needs the CUDA runtime bindings: pip install cuda-python ({exc})"
            raise ModelLoadError(msg) from exc
    return trt, cudart


def _cuda(cudart: Any, result: Any, what: str) -> Any:
    """Unwrap cuda-python's (error, value...) tuples into a value or a BackendError."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        msg = f"CUDA {what} failed: {err}"
        raise BackendError(msg)
    return values[0] if len(values) == 1 else tuple(values)


def default_cache_dir() -> Path:
    base = os.environ.get("CACHE_DIRECTORY")  # systemd CacheDirectory=
    return Path(base) / "tensorrt" if base else Path.home() / ".cache" / "edgevae" / "tensorrt"


def engine_name(model_sha256: str, trt_version: str, gpu_name: str) -> str:
    """Engines only run on the GPU model and TensorRT version that built them, so both are in the name."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return f"{model_sha256[:16]}-trt{trt_version}-{gpu}.plan"


class TensorRTBackend:
    key = KEY

    def __init__(self, model_path: Path, cfg: TensorRTBackendConfig | None = None) -> None:
        cfg = cfg or TensorRTBackendConfig()
        self._trt, self._cudart = trt, cudart = _import_runtime()
        self._buffers: dict[str, int] = {}
        self._stream: Any = None
        self._context: Any = None
        self._engine: Any = None
        try:
            _cuda(cudart, cudart.cudaSetDevice(cfg.device_id), "set device")
            props = _cuda(cudart, cudart.cudaGetDeviceProperties(cfg.device_id), "device properties")
        except BackendError as exc:
            raise ModelLoadError(str(exc)) from exc
        gpu_name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        engine, plan_path = None, Path(cfg.plan)
        if cfg.plan:
            if not plan_path.is_file():
                msg = f"tensorrt plan {plan_path} does not exist (leave `plan` empty to build one from the model)"
                raise ModelLoadError(msg)
            engine = self._deserialize(plan_path.read_bytes())
            if engine is None:
                msg = f"{plan_path} is not an engine for TensorRT {trt.__version__} on {gpu_name}; rebuild it here"
                raise ModelLoadError(msg)
        bundled = model_path.parent / PLAN_NAME  # written by `edgevae export` when it ran on this device
        if engine is None and bundled.is_file():
            engine = self._deserialize(bundled.read_bytes())
            if engine is None:
                logger.warning("%s was built for another GPU or TensorRT version; building one here", bundled)
            plan_path = bundled
        if engine is None:
            cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
            plan_path = cache / engine_name(sha256_file(model_path), trt.__version__, gpu_name)
            engine = self._deserialize(plan_path.read_bytes()) if plan_path.is_file() else None
            if engine is None:
                built = build_engine(
                    model_path,
                    plan_path,
                    EngineProfile.up_to(cfg.max_batch, cfg.opt_batch),
                    cfg.workspace_mb,
                    timing_cache=plan_path.parent / TIMING_CACHE_NAME,
                )
                engine = self._deserialize(built.plan)
        if engine is None:
            msg = f"TensorRT {trt.__version__} could not load the engine it built from {model_path}"
            raise ModelLoadError(msg)
        self._engine = engine
        self._max_batch = cfg.max_batch
        try:
            self._allocate()
        except BackendError as exc:
            self.close()
            raise ModelLoadError(str(exc)) from exc
        logger.info("tensorrt %s: engine %s on %s", trt.__version__, plan_path, gpu_name)

    def _deserialize(self, plan: bytes) -> Any:
        return self._trt.Runtime(trt_logger()).deserialize_cuda_engine(plan)

    def _allocate(self) -> None:
        trt, cudart, engine = self._trt, self._cudart, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if set(names) != {INPUT_NAME, SCORE_OUTPUT, CHANNEL_ERROR_OUTPUT}:
            msg = f"engine tensors are {names}; expected {INPUT_NAME!r}, {SCORE_OUTPUT!r}, {CHANNEL_ERROR_OUTPUT!r}"
            raise BackendError(msg)
        # A plan built elsewhere (`edgevae export`) may allow smaller batches than this config asks for.
        self._max_batch = min(self._max_batch, int(engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0]))
        self._dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in names}
        _, self._window, self._channels = tuple(engine.get_tensor_shape(INPUT_NAME))
        per_item = {
            INPUT_NAME: self._window * self._channels,
            SCORE_OUTPUT: 1,
            CHANNEL_ERROR_OUTPUT: self._channels,
        }
        self._context = engine.create_execution_context()
        self._stream = _cuda(cudart, cudart.cudaStreamCreate(), "stream create")
        for name in names:
            nbytes = self._max_batch * per_item[name] * self._dtypes[name].itemsize
            self._buffers[name] = int(_cuda(cudart, cudart.cudaMalloc(nbytes), "malloc"))
            self._context.set_tensor_address(name, self._buffers[name])

    def run(self, batch: np.ndarray) -> ScoreOutputs:
        if self._context is None:
            msg = "backend is closed"
            raise BackendError(msg)
        batch = np.ascontiguousarray(batch, dtype=self._dtypes[INPUT_NAME])
        scores, errors = [], []
        for start in range(0, batch.shape[0], self._max_batch):
            score, error = self._run_chunk(np.ascontiguousarray(batch[start : start + self._max_batch]))
            scores.append(score)
            errors.append(error)
        if not scores:
            return ScoreOutputs(np.empty(0, np.float32), np.empty((0, self._channels), np.float32))
        return ScoreOutputs(np.concatenate(scores), np.concatenate(errors))

    def _run_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart, n = self._cudart, chunk.shape[0]
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        score = np.empty(n, self._dtypes[SCORE_OUTPUT])
        error = np.empty((n, self._channels), self._dtypes[CHANNEL_ERROR_OUTPUT])
        if not self._context.set_input_shape(INPUT_NAME, chunk.shape):
            msg = f"tensorrt rejected an input of shape {chunk.shape}"
            raise BackendError(msg)
        _cuda(
            cudart,
            cudart.cudaMemcpyAsync(self._buffers[INPUT_NAME], chunk.ctypes.data, chunk.nbytes, h2d, self._stream),
            "copy in",
        )
        if not self._context.execute_async_v3(int(self._stream)):
            msg = f"tensorrt failed on a batch of shape {chunk.shape}"
            raise BackendError(msg)
        for name, host in ((SCORE_OUTPUT, score), (CHANNEL_ERROR_OUTPUT, error)):
            _cuda(
                cudart,
                cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name], host.nbytes, d2h, self._stream),
                "copy out",
            )
        _cuda(cudart, cudart.cudaStreamSynchronize(self._stream), "synchronize")
        return score.astype(np.float32, copy=False), error.astype(np.float32, copy=False)

    def close(self) -> None:
        for ptr in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers = {}
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None
