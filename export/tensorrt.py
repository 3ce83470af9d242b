"""`edgevae export --tensorrt`: a TensorRT 10 engine (`model.plan`) next to the bundle's ONNX model.

The build itself is the agent's (`edgevae.agent.backends.tensorrt_engine`), so an engine made at export and
one the agent makes on first start come from the same builder with the same defaults. This module adds
what only export needs: the refusal of Q/DQ models TensorRT cannot take, export's error type, and the
figures for the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgevae.agent.backends import tensorrt_engine
from edgevae.agent.backends.tensorrt_engine import PLAN_NAME, WORKSPACE_MB, EngineProfile
from edgevae.core.errors import ExportError, ModelLoadError

logger = logging.getLogger(__name__)

__all__ = ["PLAN_NAME", "EngineProfile", "build_engine", "check_tensorrt_compatible", "require_tensorrt"]


def require_tensorrt() -> ModuleType:
    """Import tensorrt >= 10, or raise ExportError saying what to install."""
    try:
        return tensorrt_engine.import_tensorrt()
    except ModelLoadError as exc:
        raise ExportError(str(exc), remedy=exc.remedy) from exc


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
    workspace_mb: int = WORKSPACE_MB,
) -> dict[str, Any]:
    """Build and serialize the engine of a (batch, `window`, `channels`) model; returns figures for the manifest."""
    profile = profile or EngineProfile()
    check_tensorrt_compatible(onnx_path)
    trt = require_tensorrt()
    try:
        built = tensorrt_engine.build_engine(onnx_path, plan_path, profile, workspace_mb, timing_cache)
    except ModelLoadError as exc:
        raise ExportError(str(exc), remedy=exc.remedy) from exc
    if built.shapes[0][1:] != (window, channels):
        msg = f"{onnx_path}: TensorRT sees windows of {built.shapes[0][1:]}, the run has ({window}, {channels})"
        raise ExportError(msg)
    logger.info("tensorrt %s engine %s (%s bytes)", trt.__version__, plan_path, len(built.plan))
    return {
        "plan_file": plan_path.name,
        "tensorrt_version": str(trt.__version__),
        "gpu": _gpu_name(),
        "strongly_typed": True,
        "input_shapes": dict(zip(("min", "opt", "max"), built.shapes, strict=True)),
        **asdict(profile),
    }


def _gpu_name() -> str:
    # Informational only: the engine is valid on this GPU model and TensorRT version alone.
    try:
        import torch
    except ImportError:
        return ""
    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else ""
