"""The detection self-test: injected faults are caught, normal windows are not flagged, and the agent
publishes the report retained."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_fixtures import Collector, Names, agent_document, agent_process, to_toml

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import load_bundle
from edgevae.agent.health import detection_self_test, golden_windows
from edgevae.core.faults import FAULT_KINDS, inject
from edgevae.demo.broker import Broker


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_a_fault_changes_only_its_channel_and_rows(kind: str) -> None:
    windows = np.random.default_rng(0).normal(size=(5, 8, 3)).astype(np.float32)
    out = inject(windows, kind, channel=1, magnitude=3.0, span=4, rng=np.random.default_rng(1))
    changed = np.argwhere(out != windows)
    assert len(changed) > 0
    assert set(changed[:, 2]) == {1}, "only the faulty channel"
    assert changed[:, 1].min() >= 4, "only the newest rows"


def test_the_tiny_model_catches_every_fault_and_flags_no_normal_window(bundle: Path) -> None:
    b = load_bundle(bundle)
    windows = golden_windows(b.root, b.manifest)
    assert windows is not None
    backend = create_backend(b.model_path)
    # The fixture's streams swing a third of the model's std: ten of their std are some 3.5 of the model's.
    report = detection_self_test(backend, b.manifest, windows, "edge-1", "golden", magnitude=10.0)
    small = detection_self_test(backend, b.manifest, windows, "edge-1", "golden", magnitude=0.1)
    backend.close()
    assert report.normal_flagged == 0.0
    caught = {k: v["caught"] for k, v in report.faults.items()}
    assert caught["offset"] == caught["spike"] == caught["drift"] == 1.0, caught
    assert caught["noise"] >= 0.9, caught
    assert report.faults["offset"]["windows"] == len(windows) * 3
    assert small.faults["offset"]["caught"] == 0.0, "a fault too small to see is not caught: the test can fail"


def test_the_agent_publishes_its_health_retained(
    run_agent: Callable[..., Any], collector: Collector, names: Names, broker: Broker
) -> None:
    run_agent()
    topic = names.agent_topic("health")
    report = collector.latest_json(topic, lambda r: True, 15)
    assert report["model"] == {"id": "tiny-zscore", "version": "1.0.0"}
    assert report["normal_flagged"] == 0.0
    assert set(report["faults"]) == set(FAULT_KINDS)
    late = Collector(broker, [topic])  # a dashboard that subscribes later still gets it
    late.wait_for(lambda ms: any(m.retain and m.json() == report for m in ms), 10, "the retained health report")
    late.close()


def test_sigusr1_runs_the_self_test_now(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector
) -> None:
    """On demand (`systemctl kill -s USR1 edgevae-agent`): a new report without waiting for the hour."""
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names)))
    topic = names.agent_topic("health")
    with agent_process(config) as proc:
        first = collector.latest_json(topic, lambda r: True, 30)
        proc.send_signal(signal.SIGUSR1)
        second = collector.latest_json(topic, lambda r: r["time"] > first["time"], 30)
        assert proc.poll() is None, "the agent runs on"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert second["faults"] == first["faults"], "the same golden windows, the same figures"
    assert "received SIGUSR1" in config.with_suffix(".log").read_text()
