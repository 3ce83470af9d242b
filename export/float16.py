"""Float16 for the VAE body only: weights and layers in float16, scoring arithmetic and I/O in float32.

Raw readings above 65504 (pressure in Pa, counters) are infinite in float16, and so are large squared
errors of an anomalous window; normalization and the error arithmetic therefore never leave float32.
onnxruntime's float16 converter cannot express that (it round-trips the output of every blocked node
through float16), so the body is converted here, with one Cast on each tensor that crosses its border.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevae.core.errors import ExportError
from edgevae.export.partition import body_nodes, sort_nodes

logger = logging.getLogger(__name__)

# Ops whose float16 form is the float32 one with float16 tensors; anything else in the body is refused
# rather than converted into a graph that only fails on a device.
FP16_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Exp",
        "Neg",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Relu",
        "LeakyRelu",
        "Elu",
        "Softplus",
        "Gelu",
        "Clip",
        "Reshape",
        "Flatten",
        "Transpose",
        "Identity",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Split",
        "Shape",
        "Gather",
    }
)


def convert_fp16(model_path: Path, out_path: Path) -> dict[str, Any]:
    """Write `model_path` with its body in float16; the model must have no Constant nodes (pre-processed)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    graph = model.graph
    if any(n.op_type == "Constant" for n in graph.node):
        msg = f"{model_path}: fold Constant nodes into initializers first (quant_pre_process does)"
        raise ExportError(msg)
    body = set(body_nodes(model))
    unsupported = sorted({n.op_type for n in graph.node if n.name in body} - FP16_OPS)
    if unsupported:
        msg = f"float16 conversion supports the ops {sorted(FP16_OPS)} in the VAE body, found {unsupported}"
        raise ExportError(msg)

    float_tensors = {
        v.name
        for v in [*graph.input, *graph.output, *graph.value_info]
        if v.type.tensor_type.elem_type == TensorProto.FLOAT
    } | {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    initializers = {i.name: i for i in graph.initializer}
    produced_in_body = {out for n in graph.node if n.name in body for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    casts: list[onnx.NodeProto] = []

    # Tensors entering the body: float16 initializers (copied when float32 nodes share them), or a Cast.
    entering = {
        name
        for n in graph.node
        if n.name in body
        for name in n.input
        if name in float_tensors and name not in produced_in_body
    }
    for name in sorted(entering):
        half = f"{name}/fp16"
        shared = any(c.name not in body for c in consumers[name]) or name in graph_outputs
        if name in initializers and not shared:
            _to_half(initializers[name])
            continue
        if name in initializers:
            graph.initializer.append(_half_copy(initializers[name], half))
        else:
            casts.append(helper.make_node("Cast", [name], [half], name=f"{name}/to_fp16", to=TensorProto.FLOAT16))
        _rename_inputs([c for c in consumers[name] if c.name in body], name, half)

    # Tensors leaving the body: the layer writes float16, a Cast gives float32 consumers their tensor back.
    leaving = {
        name
        for name in produced_in_body
        if name in float_tensors and (name in graph_outputs or any(c.name not in body for c in consumers.get(name, [])))
    }
    for name in sorted(leaving):
        half = f"{name}/fp16"
        for n in graph.node:
            if n.name in body:
                n.output[:] = [half if out == name else out for out in n.output]
        _rename_inputs([c for c in consumers.get(name, []) if c.name in body], name, half)
        casts.append(helper.make_node("Cast", [half], [name], name=f"{name}/to_fp32", to=TensorProto.FLOAT))

    graph.node.extend(casts)
    # Inferred float32 types of body tensors are stale now; ORT and the checker infer them again.
    del graph.value_info[:]
    sort_nodes(graph)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        msg = f"float16 conversion of {model_path} produced an invalid model: {exc}"
        raise ExportError(msg) from exc
    onnx.save(model, str(out_path))
    logger.info("fp16: %s body nodes in float16, %s casts at its border", len(body), len(casts))
    return {
        "precision": "fp16",
        "tool": "edgevae body-only float16",
        "float16_nodes": len(body),
        "border_casts": len(casts),
    }


def _to_half(tensor: TensorProto) -> None:
    half = numpy_helper.from_array(_checked_half(tensor), tensor.name)
    tensor.CopyFrom(half)


def _half_copy(tensor: TensorProto, name: str) -> TensorProto:
    return numpy_helper.from_array(_checked_half(tensor), name)


def _checked_half(tensor: TensorProto) -> np.ndarray:
    values = numpy_helper.to_array(tensor)
    if np.any(np.abs(values) > np.finfo(np.float16).max):
        msg = f"initializer {tensor.name!r} has values beyond the float16 range (max |x| {np.abs(values).max():.3g})"
        raise ExportError(msg)
    return values.astype(np.float16)


def _rename_inputs(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for n in nodes:
        n.input[:] = [new if name == old else name for name in n.input]
