"""Building a TensorRT 10 engine from a bundle's ONNX model: the one builder of the agent and `edgevae export`.

Engines are tied to the GPU model and the TensorRT version, so they are built where they run: by the agent
on its first start (`tensorrt` backend) or by `edgevae export --tensorrt` on the device itself. The network
is strongly typed: the precision comes from the ONNX model (float32, float16 weights, or int8 Q/DQ), which
is the path TensorRT 10 keeps; the INT8 calibrators and precision builder flags are deprecated.

Importing this module imports no TensorRT; `import_tensorrt` does, or says what to install.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from edgevae.agent.bundle import INPUT_NAME, write_atomically
from edgevae.core.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

PLAN_NAME = "model.plan"  # the engine's name in a bundle folder
TIMING_CACHE_NAME = "timing.cache"
INSTALL_HINT = "TensorRT is not installed; install tensorrt>=10 on the target device: pip install 'tensorrt>=10,<11'"

# The defaults of every engine build, the agent's and export's.
# The detector's largest micro-batch (detection.max_batch): a bigger batch would be split anyway.
MAX_BATCH = 256
# The detector scores whatever is due at once and never waits for a batch to fill, so batches are small:
# a few devices' windows at a time.
OPT_BATCH = 16
# A VAE of this size needs a few MiB of scratch; 256 MiB leaves the rest of a board that shares its memory
# between CPU and GPU (Jetson) to the agent and the broker.
WORKSPACE_MB = 256


@dataclass(frozen=True)
class EngineProfile:
    """The batch sizes the engine accepts (min to max) and is tuned for (opt)."""

    min_batch: int = 1
    opt_batch: int = OPT_BATCH
    max_batch: int = MAX_BATCH

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            msg = (
                "expected 1 <= min_batch <= opt_batch <= max_batch, "
                f"got {self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
            raise ConfigError(msg)

    @classmethod
    def up_to(cls, max_batch: int = MAX_BATCH, opt_batch: int = OPT_BATCH) -> EngineProfile:
        """Batches 1 to `max_batch`, tuned for `opt_batch` or for `max_batch` where that is smaller.

        >>> EngineProfile.up_to(8)
        EngineProfile(min_batch=1, opt_batch=8, max_batch=8)
        """
        return cls(1, min(opt_batch, max_batch), max_batch)


class BuiltEngine(NamedTuple):
    plan: bytes  # the serialized engine, as written to the plan file
    shapes: tuple[tuple[int, int, int], ...]  # the input's (batch, window, channels) at min, opt and max


def import_tensorrt() -> ModuleType:
    """Import tensorrt >= 10, or raise ModelLoadError saying what to install."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        msg = f"{INSTALL_HINT} ({exc})"
        raise ModelLoadError(msg) from exc
    version = str(getattr(trt, "__version__", "0"))
    if int(version.split(".")[0] or 0) < 10:
        msg = f"{INSTALL_HINT} (found tensorrt {version})"
        raise ModelLoadError(msg)
    return trt


@functools.cache
def trt_logger() -> Any:
    """The process's one TensorRT logger: builders and runtimes given different loggers make TensorRT warn."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    profile: EngineProfile | None = None,
    workspace_mb: int = WORKSPACE_MB,
    timing_cache: Path | None = None,
) -> BuiltEngine:
    """Build a strongly typed engine with a dynamic batch axis from `onnx_path` and write it to `plan_path`.

    Takes minutes on small boards. `timing_cache` is read when it exists and rewritten after the build; a
    cache from another GPU or TensorRT version is ignored by TensorRT rather than fatal.
    """
    profile = profile or EngineProfile()
    trt = import_tensorrt()
    builder = trt.Builder(trt_logger())
    # TensorRT 10 networks are always explicit batch; strong typing takes each tensor's type from the model.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        msg = f"TensorRT could not parse {onnx_path}: {errors}"
        raise ModelLoadError(msg)
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [INPUT_NAME]:
        msg = f"{onnx_path}: expected the single input {INPUT_NAME!r}, TensorRT sees {inputs}"
        raise ModelLoadError(msg)
    _, window, channels = (int(d) for d in network.get_input(0).shape)
    shapes = tuple((b, window, channels) for b in (profile.min_batch, profile.opt_batch, profile.max_batch))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(optimization_profile)
    cached = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cached), True)

    logger.info("building a TensorRT %s engine from %s into %s", trt.__version__, onnx_path, plan_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        msg = f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)"
        raise ModelLoadError(msg)
    plan = bytes(memoryview(serialized))
    write_atomically(plan_path, plan)
    if timing_cache is not None:
        write_atomically(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return BuiltEngine(plan, shapes)
