"""The one TensorRT engine builder, run against a stand-in `tensorrt` module: what it asks TensorRT for, and
what it writes. The real build is tested in test_tensorrt_build.py where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgevae.agent.backends import TensorRTBackendConfig, tensorrt_engine
from edgevae.agent.backends.tensorrt_engine import (
    INSTALL_HINT,
    MAX_BATCH,
    OPT_BATCH,
    WORKSPACE_MB,
    EngineProfile,
    build_engine,
    import_tensorrt,
)
from edgevae.core.errors import ConfigError, ModelLoadError

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


class FakeTensorRT:
    """Just the TensorRT 10 calls the builder makes; `calls` records what it was asked for."""

    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    def __init__(self, version: str = "10.3.0", inputs: tuple[str, ...] = ("window",), parses: bool = True) -> None:
        self.__version__ = version
        self.inputs, self.parses = inputs, parses
        self.plan: bytes | None = b"serialized engine"
        self.calls: dict[str, Any] = {}

    # The builder's objects, each a namespace of the methods it calls.
    def Builder(self, _logger: Any) -> Any:  # noqa: N802 (TensorRT's name)
        calls = self.calls

        def network(flags: int) -> Any:
            calls["network_flags"] = flags
            inputs = [SimpleNamespace(name=name, shape=(-1, 32, 4)) for name in self.inputs]
            return SimpleNamespace(num_inputs=len(inputs), get_input=inputs.__getitem__)

        def timing_cache(data: bytes) -> bytes:
            calls["timing_in"] = data
            return data

        config = SimpleNamespace(
            set_memory_pool_limit=calls.__setitem__,
            add_optimization_profile=lambda profile: None,
            create_timing_cache=timing_cache,
            set_timing_cache=lambda cache, ignore_mismatch: None,
            get_timing_cache=lambda: SimpleNamespace(serialize=lambda: b"timings"),
        )
        profile = SimpleNamespace(set_shape=lambda name, *shapes: calls.__setitem__("profile", (name, shapes)))
        return SimpleNamespace(
            create_network=network,
            create_builder_config=lambda: config,
            create_optimization_profile=lambda: profile,
            build_serialized_network=lambda network, config: self.plan,
        )

    def OnnxParser(self, _network: Any, _logger: Any) -> Any:  # noqa: N802 (TensorRT's name)
        def parse_from_file(path: str) -> bool:
            self.calls["parsed"] = path
            return self.parses

        return SimpleNamespace(
            parse_from_file=parse_from_file, num_errors=1, get_error=lambda i: "unsupported operator"
        )


@pytest.fixture(autouse=True)
def _fresh_logger() -> Iterator[None]:
    # The builder keeps one TensorRT logger per process; each test's stand-in module makes its own.
    tensorrt_engine.trt_logger.cache_clear()
    yield
    tensorrt_engine.trt_logger.cache_clear()


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    trt = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def test_build_asks_for_the_profile_and_writes_plan_and_timing_cache(fake_trt: FakeTensorRT, tmp_path: Path) -> None:
    plan, cache = tmp_path / "engines" / "model.plan", tmp_path / "engines" / "timing.cache"
    cache.parent.mkdir()
    cache.write_bytes(b"earlier timings")
    built = build_engine(tmp_path / "model.onnx", plan, EngineProfile(2, 8, 64), 32, timing_cache=cache)
    assert built.shapes == ((2, 32, 4), (8, 32, 4), (64, 32, 4))
    assert fake_trt.calls["profile"] == ("window", built.shapes)
    assert fake_trt.calls["workspace"] == 32 << 20
    assert fake_trt.calls["parsed"] == str(tmp_path / "model.onnx")
    assert fake_trt.calls["timing_in"] == b"earlier timings"
    assert plan.read_bytes() == built.plan == fake_trt.plan
    assert cache.read_bytes() == b"timings"
    assert sorted(p.name for p in plan.parent.iterdir()) == ["model.plan", "timing.cache"]  # no .tmp left


def test_build_defaults(fake_trt: FakeTensorRT, tmp_path: Path) -> None:
    built = build_engine(tmp_path / "model.onnx", tmp_path / "model.plan")
    assert [s[0] for s in built.shapes] == [1, OPT_BATCH, MAX_BATCH]
    assert fake_trt.calls["workspace"] == WORKSPACE_MB << 20
    assert fake_trt.calls["timing_in"] == b""  # a fresh timing cache, not kept unless asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan"]


@pytest.mark.parametrize(
    ("trt", "message"),
    [
        (FakeTensorRT(parses=False), "could not parse .*unsupported operator"),  # the parser's own errors
        (FakeTensorRT(inputs=("x",)), "expected the single input 'window'"),  # not an edgevae graph
        (FakeTensorRT(inputs=("window", "extra")), "expected the single input 'window'"),
        (FakeTensorRT(version="8.6.1"), "install tensorrt>=10 .*found tensorrt 8.6.1"),  # TensorRT 8 API
    ],
)
def test_build_refusals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trt: FakeTensorRT, message: str) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(ModelLoadError, match=message):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan")
    assert not (tmp_path / "model.plan").exists()


def test_failed_build_writes_nothing(fake_trt: FakeTensorRT, tmp_path: Path) -> None:
    fake_trt.plan = None
    with pytest.raises(ModelLoadError, match="failed to build an engine"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", timing_cache=tmp_path / "timing.cache")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_missing_tensorrt_says_what_to_install() -> None:
    with pytest.raises(ModelLoadError, match="TensorRT is not installed; install tensorrt>=10") as info:
        import_tensorrt()
    assert INSTALL_HINT in str(info.value)


@pytest.mark.parametrize(
    ("max_batch", "opt_batch", "expected"),
    [
        (MAX_BATCH, OPT_BATCH, EngineProfile()),  # the defaults
        (8, 16, EngineProfile(1, 8, 8)),  # a small max_batch caps the tuned batch
        (64, 1, EngineProfile(1, 1, 64)),  # tuned for single windows
    ],
)
def test_profile_up_to(max_batch: int, opt_batch: int, expected: EngineProfile) -> None:
    assert EngineProfile.up_to(max_batch, opt_batch) == expected


@pytest.mark.parametrize(("low", "opt", "high"), [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_profile_needs_ordered_batches(low: int, opt: int, high: int) -> None:
    with pytest.raises(ConfigError, match="min_batch <= opt_batch <= max_batch"):
        EngineProfile(low, opt, high)


def test_agent_options_default_to_the_builder_defaults() -> None:
    cfg = TensorRTBackendConfig()
    assert (cfg.max_batch, cfg.opt_batch, cfg.workspace_mb) == (MAX_BATCH, OPT_BATCH, WORKSPACE_MB)
