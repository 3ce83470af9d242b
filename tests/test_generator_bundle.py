"""A generator in the bundle: exported to ONNX, sampled by the agent without torch, and used for the
detection self-test over a real broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from agent_fixtures import Collector, Names
from trained_runs import CHANNELS, WINDOW

from edgevae.agent.bundle import MANIFEST_NAME, load_bundle
from edgevae.agent.generator import SAMPLE_BATCH, GeneratorSpec, open_generator
from edgevae.agent.health import LOWEST_PRIORITY, HealthJob, Stopped, normal_windows
from edgevae.agent.table import read_table, write_table
from edgevae.cli.main import main
from edgevae.core.errors import BundleError
from edgevae.core.faults import FAULT_KINDS
from edgevae.training.generators import load_generator
from edgevae.training.generators.diffusion import DiffusionGenerator

KINDS = ("diffusion", "gan")
# Small generators that train in seconds; the self-test over the broker checks the report, not their fidelity.
SMALL = ["--hidden", "32", "--blocks", "2", "--timesteps", "100", "--ddim-steps", "10", "--n-critic", "2"]
SMALL += ["--steps", "200", "--no-progress", "--seed", "0"]


def _train_generator(data: Path, out: Path, kind: str, *extra: str) -> Path:
    assert main(["train-generator", "--kind", kind, "--data", str(data), "--out", str(out), *SMALL, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def generators(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per kind, a generator of the trained run's data, trained from a copy of its CSV with the columns
    reversed: export must put them back in the model's order."""
    root = tmp_path_factory.mktemp("generators")
    table = read_table(trained_run.parent / "readings.csv")
    reversed_csv = root / "reversed.csv"
    write_table(replace(table, values=table.values[:, ::-1], channels=table.channels[::-1]), reversed_csv)
    return {kind: _train_generator(reversed_csv, root / kind, kind, "--window", str(WINDOW)) for kind in KINDS}


@pytest.fixture(scope="module")
def bundles(
    trained_run: Path, generators: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generator-bundles")
    out = {}
    for kind, run in generators.items():
        args = ["export", "--run", str(trained_run), "--out", str(root / kind), "--generator", str(run)]
        assert main([*args, "--model-version", "1.0.0"]) == 0
        out[kind] = root / kind
    return out


def _torch_windows(run: Path, noise: np.ndarray) -> np.ndarray:
    """What torch draws from `noise`, in raw units and the model's channel order."""
    generator = load_generator(run)
    with torch.no_grad():
        if isinstance(generator, DiffusionGenerator):
            unit = generator.model.ddim(torch.from_numpy(noise), generator.steps).numpy()
        else:
            unit = generator.model(torch.from_numpy(noise)).numpy()  # type: ignore[attr-defined]
    raw = generator.meta.scaler.unscale(unit)
    return raw[:, :, [generator.meta.channels.index(c) for c in CHANNELS]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_onnx_generator_draws_what_torch_draws(
    bundles: dict[str, Path], generators: dict[str, Path], kind: str
) -> None:
    b = load_bundle(bundles[kind])
    entry = b.manifest.generator
    assert (entry["kind"], entry["file"]) == (kind, "generator.onnx")
    assert entry["file"] in b.manifest.files, "hashed with the bundle's other files"
    sampler = open_generator(b.root, entry)
    assert sampler is not None
    n = SAMPLE_BATCH + 10  # two ONNX Runtime batches
    got = sampler.sample(n, seed=7)
    rng = np.random.default_rng(7)
    noise = np.concatenate(
        [rng.standard_normal((size, *sampler.spec.noise_shape), dtype=np.float32) for size in (SAMPLE_BATCH, 10)]
    )
    expected = _torch_windows(generators[kind], noise)
    assert got.shape == (n, WINDOW, len(CHANNELS))
    assert got.dtype == np.float32
    span = expected.max(axis=(0, 1)) - expected.min(axis=(0, 1))
    assert np.max(np.abs(got - expected) / span) < 1e-3
    assert not np.allclose(got[:, :, 0], got[:, :, -1]), "the channels are not all alike: the order means something"
    np.testing.assert_array_equal(sampler.sample(n, seed=7), got)
    assert not np.array_equal(sampler.sample(n, seed=8), got)
    if kind == "diffusion":
        assert len(entry["schedule"]) == 10
        assert entry["schedule"][-1][2] == 1.0
    else:
        assert entry["schedule"] == []


@pytest.mark.slow
def test_the_agent_samples_without_torch(bundles: dict[str, Path]) -> None:
    code = (
        "import sys; from pathlib import Path; from edgevae.agent.bundle import load_bundle; "
        "from edgevae.agent.health import normal_windows; "
        f"b = load_bundle(Path({str(bundles['diffusion'])!r})); w, s = normal_windows(b.root, b.manifest, 5, 0); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(s, w.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["generator", "(5,", f"{WINDOW},", f"{len(CHANNELS)})"]


@pytest.mark.slow
def test_sampling_yields_after_every_onnx_runtime_call(bundles: dict[str, Path]) -> None:
    b = load_bundle(bundles["diffusion"])
    calls = []
    windows, source = normal_windows(b.root, b.manifest, SAMPLE_BATCH + 1, 0, lambda: calls.append(1)) or (None, "")
    assert source == "generator"
    assert windows is not None
    assert len(windows) == SAMPLE_BATCH + 1
    assert len(calls) == 2 * 10, "two batches of ten DDIM steps"

    def stop_now() -> None:
        raise Stopped

    with pytest.raises(Stopped):
        normal_windows(b.root, b.manifest, 1000, 0, stop_now)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--window", "16"],
            f"the generator makes windows of 16 rows, the model scores {WINDOW}: use --window {WINDOW}",
        ),
        (["--sines"], "the generator was trained on channels ['sine_0', 'sine_1', 'sine_2', 'sine_3', 'sine_4']"),
    ],
)
def test_a_generator_that_does_not_fit_the_model_is_refused(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    args = ["train-generator", "--kind", "gan", "--out", str(tmp_path / "gen"), *SMALL[:-5], "--steps", "2"]
    data = [] if "--sines" in flags else ["--data", str(trained_run.parent / "readings.csv")]
    assert main([*args, "--no-progress", *data, *flags]) == 0
    code = main(
        ["export", "--run", str(trained_run), "--out", str(tmp_path / "b"), "--generator", str(tmp_path / "gen")]
    )
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b" / MANIFEST_NAME).exists(), "no bundle is left behind"


DELETE = object()
GOOD = {
    "file": "generator.onnx",
    "kind": "diffusion",
    "noise_shape": [3, 8],
    "schedule": [[9, 0.1, 0.5], [0, 0.5, 1.0]],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "vae"}, "kind must be one of ('diffusion', 'gan'), got 'vae'"),
        ({"noise_shape": [3, 0]}, "noise_shape must be positive sizes, got [3, 0]"),
        ({"schedule": []}, "a diffusion generator needs a non-empty schedule"),
        ({"kind": "gan"}, "a gan generator has no schedule"),
        ({"schedule": [[9, 1.5, 1.0]]}, "schedule step [9, 1.5, 1.0] is not a step >= 0 with alpha_bars in (0, 1]"),
        ({"schedule": [[9, float("nan"), 1.0]]}, "is not a step >= 0 with alpha_bars in (0, 1]"),
        ({"schedule": [[9, 0.5]]}, "a value of the wrong type or shape"),
        ({"noise_shape": None}, "a value of the wrong type or shape"),
        ({"file": DELETE}, "missing the key 'file'"),
    ],
)
def test_a_bad_generator_entry_is_refused(change: dict[str, Any], message: str) -> None:
    entry = {k: v for k, v in {**GOOD, **change}.items() if v is not DELETE}
    with pytest.raises(BundleError, match="generator entry") as info:
        GeneratorSpec.from_entry(entry)
    assert message in str(info.value)


def test_a_good_generator_entry_is_read() -> None:
    spec = GeneratorSpec.from_entry(GOOD)
    assert (spec.kind, spec.noise_shape, spec.passes) == ("diffusion", (3, 8), 2)


@pytest.mark.slow
def test_a_manifest_whose_generator_is_not_hashed_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundles["gan"], tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    del manifest["files"]["generator.onnx"]
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="generator file 'generator.onnx' is not listed in files"):
        load_bundle(copy)


@pytest.mark.slow
def test_the_self_test_thread_runs_at_the_lowest_priority(bundles: dict[str, Path]) -> None:
    b = load_bundle(bundles["gan"])
    seen: list[int] = []
    done = threading.Event()

    def current() -> tuple[Path, Any, str, str, Any]:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return b.root, b.manifest, str(b.model_path), "onnxruntime-cpu", None

    job = HealthJob("edge-1", current, lambda payload: done.set(), interval_s=0, magnitude=3.0, windows=8)
    job.start()
    assert done.wait(30)
    job.stop()
    assert seen == [LOWEST_PRIORITY]
    assert job.last is not None
    assert (job.last.source, job.last.windows, job.last.seed) == ("generator", 8, 0)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0, "the scoring thread keeps its priority"


@pytest.mark.slow
def test_the_agent_self_tests_with_the_bundled_generator_over_the_broker(
    bundles: dict[str, Path], run_agent: Callable[..., Any], collector: Collector, names: Names
) -> None:
    service = run_agent(model={"bundle": str(bundles["diffusion"])}, selftest={"magnitude": 3.0})
    topic = names.agent_topic("health")
    first = collector.latest_json(topic, lambda r: True, 30)
    assert (first["source"], first["windows"], first["seed"]) == ("generator", 64, 0)
    assert first["model"] == {"id": "run", "version": "1.0.0"}
    assert set(first["faults"]) == set(FAULT_KINDS)
    assert first["faults"]["offset"]["windows"] == 64 * len(CHANNELS)
    assert 0 < first["sampling_s"] < first["seconds"]
    assert service.health is not None
    service.health.poke()  # a new run draws new windows
    second = collector.latest_json(topic, lambda r: r["seed"] == 1, 30)
    assert second["source"] == "generator"
