"""The product end to end: `train` on the simulated plant, `export` to INT8, score over a real broker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from agent_fixtures import Collector, Names, Publisher, agent_document

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.agent.config_file import load_config
from edgevae.agent.offline import score_table
from edgevae.agent.readings import encode_payloads
from edgevae.agent.service import Service
from edgevae.cli.main import main
from edgevae.core.window import window_count
from edgevae.demo.broker import Broker
from edgevae.export.bundle_writer import export_bundle
from edgevae.export.graph import ScoringGraph
from edgevae.export.parity import spearman
from edgevae.training.checkpoint import load_run
from edgevae.training.simulate import Fault, simulate_plant

pytestmark = pytest.mark.slow

ROWS = 1200
FAULT = Fault("pressure", start=600, length=250, kind="offset", magnitude=1.2)


@dataclass(frozen=True)
class Trained:
    run: Path
    int8: Path
    fp32: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("e2e")
    run = root / "run"
    sizes = ["--window", "32", "--stride", "8", "--hidden", "64", "--latent", "8"]
    system = ["--threads", "1", "--device", "cpu", "--no-progress", "--seed", "0"]
    assert main(["train", "--out", str(run), "--sim-rows", "50000", "--epochs", "10", *sizes, *system]) == 0
    int8 = export_bundle(run, root / "int8", precision="int8", model_version="1.0.0").bundle
    fp32 = export_bundle(run, root / "fp32", precision="fp32", model_version="1.0.0").bundle
    return Trained(run, int8, fp32)


def test_export_parity_torch_fp32_int8(trained: Trained) -> None:
    run = load_run(trained.run)
    windows = np.concatenate([run.holdout, run.train_sample[:500]]).astype(np.float32)
    graph = ScoringGraph(run.model, run.mean, run.std, load_bundle(trained.fp32).manifest.score_rows).eval()
    with torch.no_grad():
        reference = graph(torch.from_numpy(windows)).score.numpy()
    fp32 = create_backend(load_bundle(trained.fp32).model_path).run(windows).score
    int8 = create_backend(load_bundle(trained.int8).model_path).run(windows).score
    assert np.max(np.abs(fp32 - reference) / np.abs(reference)) <= 1e-4
    # Normal windows score within a few percent of each other, so their ranks are a harsh test of INT8.
    assert spearman(int8, fp32) > 0.9
    assert np.median(np.abs(int8 - fp32) / fp32) < 0.05
    # The INT8 bundle's own threshold decides almost every window as the FP32 bundle's does.
    t8, t32 = (load_bundle(b).manifest.threshold.value for b in (trained.int8, trained.fp32))
    assert np.mean((int8 > t8) != (fp32 > t32)) < 0.01
    int8_size = (trained.int8 / "model.onnx").stat().st_size
    assert int8_size < 0.5 * (trained.fp32 / "model.onnx").stat().st_size


def test_offline_scores_catch_the_fault_and_name_its_channel(trained: Trained) -> None:
    table = simulate_plant(ROWS, seed=77, faults=[FAULT])
    rows = score_table(trained.int8, table)
    flags = np.array([r.is_anomaly for r in rows])
    assert not flags[: FAULT.start].any()
    assert flags[FAULT.start : FAULT.stop + 40].any()
    worst = max((r for r in rows if r.score is not None), key=lambda r: r.score or 0.0)
    channels = load_bundle(trained.int8).manifest.channels
    assert channels[int(np.argmax(worst.channel_error))] == "pressure"


@pytest.fixture
def agent(broker: Broker, trained: Trained, names: Names) -> Iterator[Service]:
    config = load_config(agent_document(broker, trained.int8, names))
    service = Service(config)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    yield service
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def _alerts(collector: Collector) -> list[dict[str, Any]]:
    return [m.json() for m in collector.messages if m.topic.endswith("/alert")]


def test_trained_int8_model_over_mqtt(
    agent: Service, collector: Collector, publisher: Publisher, names: Names, trained: Trained
) -> None:
    collector.wait_payload(names.status, b"online")
    streams = {
        "pump-1": simulate_plant(ROWS, seed=71),
        "pump-2": simulate_plant(ROWS, seed=72, faults=[FAULT]),
        "pump-3": simulate_plant(ROWS, seed=73),
    }
    for device, table in streams.items():
        publisher.send(names.data(device), encode_payloads(table.timestamps, table.values, table.channels, 10))
    manifest = load_bundle(trained.int8).manifest
    total = len(streams) * window_count(ROWS, manifest.window, manifest.stride)
    collector.latest_json(names.stats, lambda s: s["windows_scored"] == total, timeout=30)
    alerts = collector.wait_for(
        lambda ms: len(_alerts(collector)) >= 2 and _alerts(collector), what="an alert and its end"
    )
    assert [(a["type"], a["device"]) for a in alerts] == [("alert", "pump-2"), ("end", "pump-2")]
    opened, ended = alerts
    assert opened["id"] == ended["id"]
    assert "pressure" in [c["channel"] for c in opened["top_channels"]]
    fault_start = streams["pump-2"].timestamps[FAULT.start]
    fault_end = streams["pump-2"].timestamps[FAULT.stop - 1]
    assert fault_start <= opened["window_end"] <= fault_end
    assert opened["model"] == {"id": manifest.model_id, "version": "1.0.0"}
