"""Export a trained generator (`edgevae train-generator`'s run folder) to ONNX for a bundle.

The graph takes standard normal noise and gives windows in raw sensor units in the bundle's channel order
(the contract is in `edgevae.agent.generator`): a GAN's generator is one pass; a diffusion model's graph is
one DDIM step of its denoiser, run over the schedule the manifest lists. Export checks that ONNX Runtime,
walking the graph the way the agent does, draws the windows torch draws from the same noise.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from edgevae.agent.bundle import sha256_file
from edgevae.agent.generator import (
    GENERATOR_FILE,
    NEXT_OUTPUT,
    NOISE_INPUT,
    STEP_INPUTS,
    WINDOW_OUTPUT,
    GeneratorSampler,
    GeneratorSpec,
)
from edgevae.core.errors import ExportError
from edgevae.export.onnx import DEFAULT_OPSET
from edgevae.training.generators import STATE_FILE, GeneratorMeta, Scaler, load_generator
from edgevae.training.generators.diffusion import Diffusion, DiffusionGenerator
from edgevae.training.generators.gan import GANGenerator

logger = logging.getLogger(__name__)

PARITY_WINDOWS = 16
# Largest difference allowed between ONNX Runtime's and torch's windows from the same noise, as a share of
# each channel's training range: float32 summation order, compounded over the DDIM steps, stays far below.
PARITY_TOLERANCE = 1e-3


class _RawUnits(nn.Module):
    """(B, L, C) windows in [0, 1] of the generator's channels -> raw units in the bundle's channel order."""

    def __init__(self, scaler: Scaler, order: list[int]) -> None:
        super().__init__()
        lo = np.asarray(scaler.data_min, dtype=np.float32)
        span = np.asarray(scaler.data_max, dtype=np.float32) - lo
        span = np.where(span > 1e-12, span, 1.0).astype(np.float32)
        self.order: torch.Tensor
        self.lo: torch.Tensor
        self.span: torch.Tensor
        self.register_buffer("order", torch.tensor(order, dtype=torch.long))
        self.register_buffer("lo", torch.from_numpy(lo[order]))
        self.register_buffer("span", torch.from_numpy(span[order]))

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = unit.index_select(2, self.order) * self.span + self.lo
        return out


class _GanGraph(nn.Module):
    def __init__(self, generator: GANGenerator, raw: _RawUnits) -> None:
        super().__init__()
        self.model, self.raw = generator.model, raw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.raw(self.model(x))
        return out


class _DdimStepGraph(nn.Module):
    def __init__(self, model: Diffusion, raw: _RawUnits) -> None:
        super().__init__()
        self.model, self.raw = model, raw

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor, alpha_bar_next: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_next, x0 = self.model.ddim_step(x, t.expand(x.shape[0]), alpha_bar, alpha_bar_next)
        return x_next, self.raw(((x0 + 1) / 2).transpose(1, 2))


def channel_order(meta: GeneratorMeta, channels: tuple[str, ...]) -> list[int]:
    """Index into the generator's channels of each bundle channel, in the bundle's order."""
    if sorted(meta.channels) != sorted(channels):
        msg = (
            f"the generator was trained on channels {list(meta.channels)}, the model on {list(channels)}: "
            "train the generator on the model's data"
        )
        raise ExportError(msg)
    return [meta.channels.index(c) for c in channels]


def export_generator(run_dir: Path, folder: Path, channels: tuple[str, ...], window: int) -> dict[str, Any]:
    """Write `folder`/generator.onnx from the generator in `run_dir`; returns the manifest's `generator` entry."""
    generator = load_generator(run_dir)
    meta = generator.meta
    order = channel_order(meta, channels)
    if meta.window != window:
        msg = f"the generator makes windows of {meta.window} rows, the model scores {window}: use --window {window}"
        raise ExportError(msg)
    raw = _RawUnits(meta.scaler, order)
    path = folder / GENERATOR_FILE
    graph: nn.Module
    if isinstance(generator, DiffusionGenerator):
        model = generator.model
        schedule = model.ddim_schedule(generator.steps)
        noise_shape = [model.cfg.channels, window]
        graph = _DdimStepGraph(model, raw)
        example: tuple[torch.Tensor, ...] = (
            torch.zeros(2, *noise_shape), torch.tensor([schedule[0][0]]),
            torch.tensor([schedule[0][1]]), torch.tensor([schedule[0][2]]),
        )  # fmt: skip
        names, outputs = [NOISE_INPUT, *STEP_INPUTS], [NEXT_OUTPUT, WINDOW_OUTPUT]
    elif isinstance(generator, GANGenerator):
        schedule = []
        noise_shape = list(generator.model.cfg.noise_shape)
        graph = _GanGraph(generator, raw)
        example, names, outputs = (torch.zeros(2, *noise_shape),), [NOISE_INPUT], [WINDOW_OUTPUT]
    else:
        msg = f"cannot export a {meta.kind} generator to ONNX"
        raise ExportError(msg)
    _to_onnx(graph.eval(), example, names, outputs, path)
    spec = GeneratorSpec(GENERATOR_FILE, meta.kind, tuple(noise_shape), tuple(schedule))
    parity = _parity(generator, graph, raw, spec, path)
    return {
        "file": GENERATOR_FILE,
        "kind": meta.kind,
        "noise_shape": noise_shape,
        "schedule": [[t, round(ab, 9), round(ab_next, 9)] for t, ab, ab_next in schedule],
        "parity": parity,
        "source": {
            "run": run_dir.resolve().name,
            "sha256": sha256_file(run_dir / STATE_FILE),
            "sampler": meta.sampler,
            "steps": meta.training.get("steps"),
            "seconds": meta.training.get("seconds"),
        },
    }


def _to_onnx(
    graph: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str], path: Path
) -> None:
    # The TorchScript exporter, as export.onnx explains; only the batch axis is dynamic.
    dynamic_axes = {name: {0: "batch"} for name in (NOISE_INPUT, *outputs)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # GroupNorm checks the batch size in Python while tracing; the check does not enter the graph (the
        # parity check and the tests sample other batch sizes than the trace's).
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        try:
            torch.onnx.export(
                graph, example, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic_axes,
                opset_version=DEFAULT_OPSET, do_constant_folding=True, dynamo=False,
            )  # fmt: skip
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
            raise ExportError(f"torch.onnx.export failed for the generator: {exc}") from exc
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported generator is not a valid ONNX model: {exc}") from exc


@torch.no_grad()
def _parity(generator: Any, graph: nn.Module, raw: _RawUnits, spec: GeneratorSpec, path: Path) -> float:
    """Largest |ONNX Runtime - torch| over PARITY_WINDOWS windows from the same noise, per channel range."""
    noise = np.random.default_rng(0).standard_normal((PARITY_WINDOWS, *spec.noise_shape), dtype=np.float32)
    if isinstance(generator, DiffusionGenerator):
        unit = generator.model.ddim(torch.from_numpy(noise), generator.steps)
        expected = raw(unit).numpy()
    else:
        expected = graph(torch.from_numpy(noise)).numpy()
    got = GeneratorSampler(path, spec)._sample_batch(noise, None)
    span = np.asarray(generator.meta.scaler.data_max) - np.asarray(generator.meta.scaler.data_min)
    span = np.where(span > 1e-12, span, 1.0)[raw.order.numpy()]
    worst = float(np.max(np.abs(got - expected) / span))
    if not worst <= PARITY_TOLERANCE:
        msg = f"the ONNX generator differs from torch by {worst:.3g} of a channel's range (allowed {PARITY_TOLERANCE})"
        raise ExportError(msg)
    logger.info("generator exported to ONNX (%s, parity %.2g of a channel's range)", spec.kind, worst)
    return float(f"{worst:.3g}")
