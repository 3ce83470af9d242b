"""Generators of sensor windows (a GAN and a denoising diffusion model), trained centrally and sampled
offline to augment data, or on a device for self-tests.

Every generator is trained in [0, 1] min-max space of the training windows and saves a run folder:

    DIR/generator.json    kind ("gan" | "diffusion"), window, channels, the scaler (data_min, data_max),
                          seed, sampler settings, training figures; readable without torch
    DIR/generator.pt      the torch state (weights and the config to rebuild the modules)

`load_generator(DIR)` gives a `Generator`, whose `sample(n, seed)` returns (n, window, channels) float32 in
raw sensor units, the channels in `channels` order. The kinds are in `KINDS`, each a module path, so that
reading a run folder's metadata never imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

META_FILE = "generator.json"
STATE_FILE = "generator.pt"
# kind -> "module:function" that loads a run folder of that kind into a Generator.
KINDS = {
    "gan": "edgevae.training.generators.gan:load",
    "diffusion": "edgevae.training.generators.diffusion:load",
}


@dataclass(frozen=True)
class Scaler:
    """Per-channel min-max scaling to [0, 1], as TimeGAN and Diffusion-TS train (fit on the training windows)."""

    data_min: tuple[float, ...]
    data_max: tuple[float, ...]

    @classmethod
    def fit(cls, windows: np.ndarray) -> Scaler:
        flat = windows.reshape(-1, windows.shape[-1]).astype(np.float64)
        return cls(tuple(flat.min(axis=0).tolist()), tuple(flat.max(axis=0).tolist()))

    def _span(self) -> np.ndarray:
        lo, hi = np.asarray(self.data_min), np.asarray(self.data_max)
        return np.where(hi - lo > 1e-12, hi - lo, 1.0)

    def scale(self, windows: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((windows - np.asarray(self.data_min)) / self._span()).astype(np.float32)
        return out

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        out: np.ndarray = (scaled * self._span() + np.asarray(self.data_min)).astype(np.float32)
        return out


@dataclass(frozen=True)
class GeneratorMeta:
    kind: str
    window: int
    channels: tuple[str, ...]
    scaler: Scaler
    seed: int
    sampler: dict[str, Any] = field(default_factory=dict)  # e.g. {"steps": 50} for DDIM
    training: dict[str, Any] = field(default_factory=dict)  # data, epochs/steps, seconds, losses
    schema: int = 1

    def to_json(self) -> str:
        data = asdict(self)
        data["channels"] = list(self.channels)
        data["scaler"] = {"data_min": list(self.scaler.data_min), "data_max": list(self.scaler.data_max)}
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def read(cls, run_dir: Path) -> GeneratorMeta:
        data = json.loads((run_dir / META_FILE).read_text())
        scaler = Scaler(tuple(data["scaler"]["data_min"]), tuple(data["scaler"]["data_max"]))
        return cls(
            kind=str(data["kind"]), window=int(data["window"]), channels=tuple(data["channels"]), scaler=scaler,
            seed=int(data["seed"]), sampler=dict(data.get("sampler", {})), training=dict(data.get("training", {})),
            schema=int(data.get("schema", 1)),
        )  # fmt: skip


class Generator(Protocol):
    meta: GeneratorMeta

    def sample(
        self, n: int, seed: int = 0, batch: int = 1024, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """(n, window, channels) float32 in raw sensor units. The same seed and batch give the same windows;
        another batch size the same up to float rounding. `on_batch(k)` is called after each batch of k windows
        (a progress bar's update)."""
        ...


def load_generator(run_dir: str | Path) -> Generator:
    """Open a run folder written by `edgevae train-generator` (imports torch and the kind's module)."""
    import importlib

    from edgevae.core.errors import DataError

    run_dir = Path(run_dir)
    try:
        meta = GeneratorMeta.read(run_dir)
    except FileNotFoundError as exc:
        msg = f"{run_dir} is not a generator run folder (no {META_FILE})"
        raise DataError(msg, remedy="give the folder `edgevae train-generator --out` wrote") from exc
    if meta.kind not in KINDS:
        msg = f"{run_dir}: unknown generator kind {meta.kind!r}; known: {sorted(KINDS)}"
        raise DataError(msg)
    module, function = KINDS[meta.kind].split(":")
    loaded: Generator = getattr(importlib.import_module(module), function)(run_dir)
    return loaded
