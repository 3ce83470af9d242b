"""TensorRT engine builds: a real build where TensorRT and a CUDA GPU exist, the clear refusal elsewhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgevae.core.errors import ExportError
from edgevae.export._rundir import load_run
from edgevae.export.bundle_writer import export_bundle
from edgevae.export.onnx import to_onnx
from edgevae.export.quantize import Int8Settings, Precision, compress
from edgevae.export.tensorrt import EngineProfile, build_engine, check_tensorrt_compatible, require_tensorrt


def _cuda_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not (HAVE_TENSORRT and _cuda_present()), reason="needs the tensorrt package and a CUDA GPU"
)


@pytest.fixture(scope="module")
def models(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trt")
    run = load_run(trained_run)
    graph = run.graph
    fp32 = to_onnx(graph, root / "fp32.onnx", graph.window, graph.channels)
    paths = {"fp32": fp32, "run": run.root}
    paths["int8-cpu"] = root / "int8-cpu.onnx"
    compress(fp32, paths["int8-cpu"], Precision.INT8, run.train_sample, Int8Settings(symmetric=False))
    paths["int8"] = root / "int8.onnx"
    compress(fp32, paths["int8"], Precision.INT8, run.train_sample, Int8Settings(symmetric=True))
    paths["fp16"] = root / "fp16.onnx"
    compress(fp32, paths["fp16"], Precision.FP16)
    return paths


@pytest.mark.slow
@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_missing_tensorrt_says_what_to_install(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"TensorRT is not installed; install tensorrt>=10 on the target device"):
        require_tensorrt()
    with pytest.raises(ExportError, match="TensorRT is not installed"):
        export_bundle(models["run"], tmp_path / "bundle", tensorrt=True)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
def test_cpu_int8_is_refused_for_tensorrt(models: dict[str, Path]) -> None:
    # uint8 activations with non-zero zero points run on ORT's CPU kernels, not in TensorRT.
    with pytest.raises(ExportError, match="symmetric int8"):
        check_tensorrt_compatible(models["int8-cpu"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp32", "fp16", "int8"])
def test_tensorrt_ready_models_pass_the_precheck(models: dict[str, Path], name: str) -> None:
    check_tensorrt_compatible(models[name])


@pytest.mark.slow
@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("name", ["fp32", "fp16", "int8"])
def test_build_engine(models: dict[str, Path], name: str, tmp_path: Path) -> None:
    import tensorrt as trt

    plan = tmp_path / "model.plan"
    cache = tmp_path / "timing.cache"
    info = build_engine(models[name], plan, 32, 4, EngineProfile(1, 8, 64), timing_cache=cache)
    assert plan.stat().st_size > 0
    assert cache.stat().st_size > 0
    assert info["input_shapes"]["max"] == (64, 32, 4)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert sorted(names) == ["channel_error", "score", "window"]
    assert np.all(np.asarray(engine.get_tensor_profile_shape("window", 0)[2]) == (64, 32, 4))
