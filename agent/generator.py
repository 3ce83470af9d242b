"""A bundled generator of normal windows, sampled on the device with ONNX Runtime (no torch).

`edgevae export --generator DIR` puts a trained generator (`edgevae train-generator`) into the bundle as
`generator.onnx` and describes it in the manifest's `generator` entry:

    {"file": "generator.onnx", "kind": "diffusion", "noise_shape": [5, 32],
     "schedule": [[499, 0.0, 0.0062], ..., [0, 0.9999, 1.0]], "parity": 2e-07, "source": {...}}

The graph carries the rest of the contract, so sampling is the same few lines for every kind:

- input `x`: (batch, *noise_shape) float32, standard normal noise to start from;
- output `window`: (batch, window, channels) float32 in raw sensor units, channels in the bundle's order
  (the generator's scaling to and from [0, 1] is inside the graph);
- a diffusion model's graph is one DDIM step: inputs `t` (1,) int64, `alpha_bar` and `alpha_bar_next` (1,)
  float32, and output `x_next`, the state for the next step. `schedule` lists the steps (t, alpha_bar,
  alpha_bar_next) from the noisiest to the clean window, and the last step's `window` is the sample.
  A GAN's graph is one pass and its `schedule` is empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.core.errors import BundleError, ModelLoadError

GENERATOR_FILE = "generator.onnx"
GENERATOR_KINDS = ("diffusion", "gan")
NOISE_INPUT = "x"
STEP_INPUTS = ("t", "alpha_bar", "alpha_bar_next")
WINDOW_OUTPUT = "window"
NEXT_OUTPUT = "x_next"
# Windows per ONNX Runtime call: small enough that one call holds the core for milliseconds, not seconds.
SAMPLE_BATCH = 64


@dataclass(frozen=True)
class GeneratorSpec:
    """The manifest's `generator` entry, checked."""

    file: str
    kind: str
    noise_shape: tuple[int, ...]
    schedule: tuple[tuple[int, float, float], ...]

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> GeneratorSpec:
        try:
            spec = cls(
                file=str(entry["file"]),
                kind=str(entry["kind"]),
                noise_shape=tuple(int(n) for n in entry["noise_shape"]),
                schedule=tuple((int(t), float(a), float(b)) for t, a, b in entry.get("schedule", [])),
            )
        except KeyError as exc:
            msg = f"manifest generator entry is missing the key {exc.args[0]!r}"
            raise BundleError(msg) from exc
        except (TypeError, ValueError) as exc:
            msg = f"manifest generator entry has a value of the wrong type or shape: {exc}"
            raise BundleError(msg) from exc
        spec.validate()
        return spec

    def validate(self) -> None:
        problems = []
        if self.kind not in GENERATOR_KINDS:
            problems.append(f"kind must be one of {GENERATOR_KINDS}, got {self.kind!r}")
        if not self.noise_shape or min(self.noise_shape) < 1:
            problems.append(f"noise_shape must be positive sizes, got {list(self.noise_shape)}")
        if self.kind == "diffusion" and not self.schedule:
            problems.append("a diffusion generator needs a non-empty schedule")
        if self.kind == "gan" and self.schedule:
            problems.append("a gan generator has no schedule")
        for t, ab, ab_next in self.schedule:
            if t < 0 or not (0.0 < ab <= 1.0 and 0.0 < ab_next <= 1.0) or not math.isfinite(ab + ab_next):
                problems.append(f"schedule step {[t, ab, ab_next]} is not a step >= 0 with alpha_bars in (0, 1]")
                break
        if problems:
            raise BundleError("invalid generator entry: " + "; ".join(problems))

    @property
    def passes(self) -> int:
        """ONNX Runtime calls per batch of windows."""
        return max(1, len(self.schedule))


class GeneratorSampler:
    """The bundled generator in its own single-threaded ONNX Runtime session."""

    def __init__(self, path: Path, spec: GeneratorSpec) -> None:
        import onnxruntime as ort

        from edgevae.agent.backends.ort_cpu import session_options

        self.spec = spec
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad models
            msg = f"onnxruntime could not load the generator {path}: {exc}"
            raise ModelLoadError(msg) from exc
        inputs = {i.name for i in self._session.get_inputs()}
        expected = {NOISE_INPUT, *(STEP_INPUTS if spec.schedule else ())}
        if inputs != expected:
            msg = f"{path}: a {spec.kind} generator takes inputs {sorted(expected)}; the graph has {sorted(inputs)}"
            raise ModelLoadError(msg)

    def sample(self, n: int, seed: int, between: Callable[[], None] | None = None) -> np.ndarray:
        """(n, window, channels) float32 normal windows in raw units; the same seed gives the same windows.

        `between` runs after every ONNX Runtime call (a stop check, or a pause that yields the core)."""
        if n < 1:
            msg = f"sample at least one window, not {n}"
            raise ValueError(msg)
        rng = np.random.default_rng(seed)
        parts = []
        for start in range(0, n, SAMPLE_BATCH):
            size = min(SAMPLE_BATCH, n - start)
            x = rng.standard_normal((size, *self.spec.noise_shape), dtype=np.float32)
            parts.append(self._sample_batch(x, between))
        return np.concatenate(parts)

    def _sample_batch(self, x: np.ndarray, between: Callable[[], None] | None) -> np.ndarray:
        if not self.spec.schedule:
            (window,) = self._session.run([WINDOW_OUTPUT], {NOISE_INPUT: x})
            if between is not None:
                between()
            return np.asarray(window, dtype=np.float32)
        window = x
        for t, ab, ab_next in self.spec.schedule:
            feeds = {
                NOISE_INPUT: x,
                "t": np.array([t], dtype=np.int64),
                "alpha_bar": np.array([ab], dtype=np.float32),
                "alpha_bar_next": np.array([ab_next], dtype=np.float32),
            }
            x, window = self._session.run([NEXT_OUTPUT, WINDOW_OUTPUT], feeds)
            if between is not None:
                between()
        return np.asarray(window, dtype=np.float32)


def open_generator(folder: Path, entry: dict[str, Any]) -> GeneratorSampler | None:
    """The bundle's generator, or None when it ships none."""
    if not entry:
        return None
    spec = GeneratorSpec.from_entry(entry)
    return GeneratorSampler(folder / spec.file, spec)
