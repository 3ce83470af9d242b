"""Drift in the agent over a real mosquitto: inputs at the training operating point say ok; a device at
another operating point shows in the retained drift report, the stats and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_fixtures import (
    CHANNELS,
    STD,
    Collector,
    Names,
    Publisher,
    batched_payloads,
    make_bundle,
    noisy,
    scrape,
    stream,
)

from edgevae.demo.broker import Broker, free_port

ROWS = 400  # past the monitor's minimum of 100 readings and 100 scores per device


def test_a_device_off_the_training_operating_point_shows_in_the_drift_report(
    tmp_path: Path,
    run_agent: Callable[..., Any],
    collector: Collector,
    names: Names,
    publisher: Publisher,
    broker: Broker,
) -> None:
    bundle = make_bundle(tmp_path / "bundle", stride=1, distribution=True)
    port = free_port()
    run_agent(
        model={"bundle": str(bundle)}, detection={"trigger": 10_000}, metrics={"port": port}, drift={"interval_s": 0.2}
    )  # alerts are not the point here
    collector.wait_payload(names.status, b"online")
    publisher.send(names.data("same"), batched_payloads(noisy(stream(ROWS, phase=0.5), seed=1)))
    elsewhere = noisy(stream(ROWS, phase=0.5), seed=2)
    elsewhere[:, 1] -= 10 * STD[1]  # the second channel runs at another operating point
    publisher.send(names.data("moved"), batched_payloads(elsewhere))
    topic = names.agent_topic("drift")
    report = collector.latest_json(topic, lambda r: set(r["devices"]) == {"same", "moved"}, timeout=20)
    assert report["model"] == {"id": "tiny-zscore", "version": "1.0.0"}
    moved, same = report["devices"]["moved"], report["devices"]["same"]
    assert same["verdict"] == "ok", same
    assert moved["verdict"] == "shift"
    channel = list(moved["inputs"]["outside"])
    assert channel == [CHANNELS[1]]
    assert moved["inputs"]["outside"][channel[0]]["below"] == 1.0
    assert moved["scores"]["verdict"] == "shift"
    stats = collector.latest_json(names.stats, lambda s: s["drift"].get("shift") == 1)
    assert stats["drift"]["ok"] == 1
    psi = scrape(port)["edgevae_score_psi"]
    assert psi[(("device", "moved"),)] == moved["scores"]["psi"] > 0.25
    late = Collector(broker, [topic])  # the report is retained: a dashboard that comes later reads it
    try:
        assert late.latest_json(topic, lambda r: "moved" in r["devices"])["devices"]["moved"]["verdict"] == "shift"
    finally:
        late.close()


def test_the_drift_report_is_assessed_a_few_devices_a_pass(tmp_path: Path) -> None:
    """A hundred devices assessed at once held the scoring loop for some 100 ms; each pass now takes a few."""
    from edgevae.agent.bundle import load_bundle
    from edgevae.agent.drift_watch import DEVICES_PER_STEP, DriftWatch

    manifest = load_bundle(make_bundle(tmp_path / "bundle", stride=1, distribution=True)).manifest
    published: list[bytes] = []
    watch = DriftWatch(manifest, published.append)
    devices = [f"d{i}" for i in range(10)]
    for i, device in enumerate(devices):
        watch.observe_readings(device, noisy(stream(ROWS, phase=0.5), seed=i))
    watch.tick()
    passes = 0
    while not published:
        watch.step()
        passes += 1
        assert passes <= len(devices)
    assert passes == -(-len(devices) // DEVICES_PER_STEP)
    watch.tick()
    for _ in range(passes):
        watch.step()
    assert len(published) == 1, "nothing changed: published once"
