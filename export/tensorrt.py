"""Build a TensorRT 10 engine (`model.plan`) from the bundle's ONNX model, on the device that will run it.

Engines are tied to the GPU model and the TensorRT version, so they are built where they run. The network
is strongly typed: the precision comes from the ONNX model itself (float32, float16 weights, or int8 Q/DQ),
which is the path TensorRT 10 keeps; the INT8 calibrators and precision builder flags are deprecated.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgevae.agent.bundle import INPUT_NAME
from edgevae.core.errors import ExportError

logger = logging.getLogger(__name__)

PLAN_NAME = "model.plan"
_INSTALL_HINT = "TensorRT is not installed; install tensorrt>=10 on the target device"


@dataclass(frozen=True)
class EngineProfile:
    """The batch sizes the engine accepts (min, max) and is tuned for (opt)."""

    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            msg = (
                "expected 1 <= min_batch <= opt_batch <= max_batch, "
                f"got {self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
            raise ExportError(msg)


def require_tensorrt() -> ModuleType:
    """Import tensorrt >= 10, or say what to install."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise ExportError(_INSTALL_HINT) from exc
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        msg = f"{_INSTALL_HINT} (found tensorrt {trt.__version__})"
        raise ExportError(msg)
    return trt


def check_tensorrt_compatible(model_path: Path) -> None:
    """Refuse Q/DQ models TensorRT cannot take: it supports only symmetric int8 (zero point 0)."""
    model = onnx.load(str(model_path))
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None:
            continue
        values = numpy_helper.to_array(zero_point)
        if values.dtype != np.int8 or np.any(values != 0):
            msg = (
                f"{model_path}: node {node.name!r} has a {values.dtype} zero point {values.ravel()[:4].tolist()}; "
                "TensorRT needs symmetric int8 Q/DQ and float biases: Int8Settings(symmetric=True, quantize_bias=False)"
            )
            raise ExportError(msg)


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    window: int,
    channels: int,
    profile: EngineProfile | None = None,
    timing_cache: Path | None = None,
    workspace_bytes: int = 1 << 30,
) -> dict[str, Any]:
    """Build and serialize a strongly typed engine with a dynamic batch axis; returns figures for the manifest."""
    profile = profile or EngineProfile()
    check_tensorrt_compatible(onnx_path)
    trt = require_tensorrt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # TensorRT 10 networks are always explicit batch; strong typing takes each tensor's type from the model.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        msg = f"TensorRT could not parse {onnx_path}: {errors}"
        raise ExportError(msg)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [INPUT_NAME]:
        msg = f"{onnx_path}: expected the single input {INPUT_NAME!r}, TensorRT sees {inputs}"
        raise ExportError(msg)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    shapes = [(b, window, channels) for b in (profile.min_batch, profile.opt_batch, profile.max_batch)]
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(optimization_profile)
    cached = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    # A cache from another GPU or TensorRT version is ignored rather than fatal; it only costs build time.
    config.set_timing_cache(config.create_timing_cache(cached), True)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        msg = f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)"
        raise ExportError(msg)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(memoryview(plan)))
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    logger.info("tensorrt %s engine %s (%s bytes)", trt.__version__, plan_path, plan_path.stat().st_size)
    return {
        "plan_file": plan_path.name,
        "tensorrt_version": str(trt.__version__),
        "gpu": _gpu_name(),
        "strongly_typed": True,
        "input_shapes": {"min": shapes[0], "opt": shapes[1], "max": shapes[2]},
        **asdict(profile),
    }


def _gpu_name() -> str:
    # Informational only: the engine is valid on this GPU model and TensorRT version alone.
    try:
        import torch
    except ImportError:
        return ""
    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else ""
