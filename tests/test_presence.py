"""Retained device state, availability and its reason, and control requests, over a real mosquitto."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import (
    STRIDE,
    WINDOW,
    Collector,
    Message,
    Names,
    Publisher,
    agent_document,
    agent_process,
    batched_payloads,
    reference_scores,
    stream,
    to_toml,
    windows_for,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgevae.agent import topics
from edgevae.agent.topics import Topics
from edgevae.demo.broker import Broker

ROWS = 120
OPEN_FAULT = ("pressure", 60, ROWS)  # still anomalous when the stream ends: the alert stays open


def alerts(messages: list[Message], names: Names) -> list[dict[str, Any]]:
    return [
        m.json() for m in messages if m.topic.startswith(f"{names.out.base}/devices/") and m.topic.endswith("/alert")
    ]


def latest(collector: Collector, topic: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15) -> Any:
    return collector.latest_json(topic, predicate, timeout=timeout)


def request(publisher: Publisher, names: Names, action: str, body: Any, properties: Any = None) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    publisher.send(f"{names.out.base}/request/{action}", payload, properties=properties)


@pytest.mark.parametrize(
    ("agent", "device", "other_agent", "other_device"),
    [
        ("edge-1", "pump", "edge-2", "pump"),  # one device name on two agents
        ("edge-1", "stats", "stats", ""),  # a device named like an agent topic, or like another agent
        ("edge-1", "edge-2", "edge-2", ""),
        ("devices", "availability", "availability", ""),
    ],
)
def test_topics_cannot_collide(agent: str, device: str, other_agent: str, other_device: str) -> None:
    mine = {Topics("edgevae", agent).device(device, leaf) for leaf in topics.DEVICE_LEAVES}
    theirs = {Topics("edgevae", other_agent).agent_topic(leaf) for leaf in topics.AGENT_LEAVES}
    if other_device:
        theirs |= {Topics("edgevae", other_agent).device(other_device, leaf) for leaf in topics.DEVICE_LEAVES}
    assert not mine & theirs
    assert all(topics.parse("edgevae", t) == (agent, device, t.rsplit("/", 1)[1]) for t in mine)


def test_the_state_carries_the_open_alerts_peak_so_far(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent(mqtt={"state_interval_s": 0.05})
    collector.wait_payload(names.status, b"online")
    values = stream(ROWS, fault=OPEN_FAULT)
    publisher.send(names.data("pump"), batched_payloads(values))
    scores = reference_scores(values, WINDOW, STRIDE)[0]
    state = latest(collector, names.state("pump"), lambda s: s.get("score") == pytest.approx(scores[-1], rel=1e-5))
    # The highest score since the alert opened, not the one it opened with.
    assert state["alert"]["peak_score"] == pytest.approx(max(scores), rel=1e-5)
    assert state["alert"]["peak_score"] > state["alert"]["score"]


def test_the_state_is_retained_normal_then_anomalous_then_cleared_at_a_clean_stop(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names, mqtt={"state_interval_s": 0.0})))
    with agent_process(config) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        assert collector.on(names.offline_reason)[-1].json()["reason"] == "connection_lost"
        publisher.send(names.data("quiet"), batched_payloads(stream(ROWS)))
        publisher.send(names.data("pump"), batched_payloads(stream(ROWS, fault=OPEN_FAULT)))
        collector.latest_json(names.stats, lambda s: s["windows_scored"] == 2 * windows_for(ROWS), timeout=30)
        opened = collector.wait_for(lambda ms: alerts(ms, names), what="the alert")[0]
        state = latest(collector, names.state("pump"), lambda s: s["state"] == "anomalous")
        assert state["alert"]["id"] == opened["id"]
        assert state["alert"]["top_channels"][0]["channel"] == "pressure"
        assert state["acknowledged"] is None
        assert state["ratio"] == pytest.approx(state["score"] / state["threshold"], rel=1e-3)
        late = Collector(broker, [f"{names.out.base}/devices/+/state"])  # comes later: reads what is open now
        try:
            got = late.wait_for(lambda ms: len({m.topic for m in ms}) == 2 and {m.topic: m for m in ms})
        finally:
            late.close()
        assert got[names.state("pump")].retain
        assert got[names.state("pump")].json()["state"] == "anomalous"
        assert got[names.state("quiet")].json()["state"] == "normal"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    collector.wait_stopped(names)
    assert [m.payload for m in collector.on(names.state("pump"))][-1] == b""  # cleared
    late = Collector(broker, [f"{names.out.base}/#"])
    try:
        late.wait_payload(names.status, b"offline")
        assert late.latest_json(names.offline_reason, lambda r: True)["reason"] == "stopped"
        assert not [m for m in late.messages if "/devices/" in m.topic]  # no retained state is left
    finally:
        late.close()


def test_the_last_will_leaves_the_reason_connection_lost(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names)))
    with agent_process(config) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        proc.kill()
        proc.wait(10)
    collector.wait_payload(names.status, b"offline")
    assert [m.json()["reason"] for m in collector.on(names.offline_reason)] == ["connection_lost"]


def test_acknowledge_mute_and_malformed_requests(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent(mqtt={"state_interval_s": 0.0})
    collector.wait_payload(names.status, b"online")
    publisher.send(names.data("pump"), batched_payloads(stream(ROWS, fault=OPEN_FAULT)))
    opened = collector.wait_for(lambda ms: alerts(ms, names), what="the alert")[0]
    response = names.out.response

    request(publisher, names, "acknowledge", {"alert_id": opened["id"], "by": "ana", "transaction": 7})
    ack = latest(collector, response("acknowledge"), lambda r: r.get("transaction") == 7)
    assert ack["status"] == "ok"
    assert ack["data"]["alert_id"] == opened["id"]
    state = latest(collector, names.state("pump"), lambda s: s.get("acknowledged") is not None)
    assert state["acknowledged"]["by"] == "ana"
    assert state["state"] == "anomalous"

    request(publisher, names, "mute", {"device": "valve", "for_s": 600, "transaction": "m1"})
    mute = latest(collector, response("mute"), lambda r: r.get("transaction") == "m1")
    assert mute["status"] == "ok"
    publisher.send(names.data("valve"), batched_payloads(stream(ROWS, fault=OPEN_FAULT)))
    muted = latest(collector, names.state("valve"), lambda s: s["state"] == "anomalous")
    assert muted["muted_until"] == mute["data"]["muted_until"]
    stats = collector.latest_json(names.stats, lambda s: s["alerts_muted"] == 1)
    assert stats["devices_muted"] == 1
    assert [a["device"] for a in alerts(collector.messages, names)] == ["pump"]  # the valve's alert is held back

    cases = [
        ("acknowledge", b"not json", "expected a JSON object (or an empty payload)"),
        ("acknowledge", {"alert_id": "nope"}, "no open alert with id 'nope'"),
        ("acknowledge", {"device": "quiet"}, "device 'quiet' has no open alert"),
        ("mute", {"device": "valve", "for_s": -1}, "`for_s`: expected 0 < for_s <= 2592000 seconds, got -1"),
        ("mute", {"device": "valve", "for_s": "1h"}, "`for_s`: expected a number of seconds"),
        ("mute", {"for_s": 60}, "expected `device`"),
        ("reboot", {}, "unknown action 'reboot'; expected one of acknowledge, mute, unmute, stats, selftest"),
    ]
    for i, (action, body, error) in enumerate(cases):
        if isinstance(body, dict):
            body = {**body, "transaction": i}
        request(publisher, names, action, body)
        topic = response(action if action != "reboot" else "error")
        if isinstance(body, bytes):
            got = latest(collector, topic, lambda r: r["status"] == "error" and "JSON" in r["error"])
        else:
            got = latest(collector, topic, lambda r, i=i: r.get("transaction") == i)
        assert got["status"] == "error", (action, got)
        assert got["error"].startswith(error), (action, got)
    stats = collector.latest_json(names.stats, lambda s: s["requests"]["refused"] == len(cases))
    assert stats["requests"]["ok"] == 2


def test_stats_and_selftest_on_request_with_mqtt5_correlation(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, broker: Broker
) -> None:
    if broker.protocol != "5":
        pytest.skip("response topics and correlation data are MQTT 5")
    run_agent(stats={"interval_s": 3600.0}, selftest={"interval_s": 0.0})
    collector.wait_payload(names.status, b"online")
    collector.latest_json(names.agent_topic("health"), lambda h: True, timeout=30)  # the self-test at start
    mine = f"{names.out.base}/response/console-{uuid.uuid4().hex[:6]}"
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic, props.CorrelationData = mine, b"\x01corr"
    request(publisher, names, "stats", b"", properties=props)
    got = collector.wait_for(lambda ms: [m for m in ms if m.topic == mine])[0]
    assert got.correlation == b"\x01corr"
    assert got.json()["status"] == "ok"
    assert got.json()["data"]["agent"] == names.agent_id

    elsewhere = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    elsewhere.ResponseTopic, elsewhere.CorrelationData = names.state("pump"), b"x"  # not a response topic
    request(publisher, names, "selftest", {"transaction": "s"}, properties=elsewhere)
    answer = latest(collector, names.out.response("selftest"), lambda r: r.get("transaction") == "s")
    assert answer["status"] == "ok"
    assert answer["data"]["started"] is True
    assert not collector.on(names.state("pump"))
    assert len(collector.wait_for(lambda ms: len(h := [m for m in ms if m.topic.endswith("/health")]) >= 2 and h)) >= 2


def test_acknowledgements_and_mutes_outlive_a_restart(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher
) -> None:
    config = tmp_path / "agent.toml"
    doc = agent_document(broker, bundle, names, mqtt={"state_interval_s": 0.0}, state={"directory": str(tmp_path)})
    config.write_text(to_toml(doc))
    with agent_process(config) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        publisher.send(names.data("pump"), batched_payloads(stream(ROWS, fault=OPEN_FAULT)))
        opened = collector.wait_for(lambda ms: alerts(ms, names), what="the alert")[0]
        request(publisher, names, "acknowledge", {"device": "pump", "note": "crew on site"})
        request(publisher, names, "mute", {"device": "valve", "for_s": 3600})
        latest(collector, names.out.response("mute"), lambda r: r["status"] == "ok")
        latest(collector, names.state("pump"), lambda s: s.get("acknowledged") is not None)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    collector.wait_stopped(names)
    with agent_process(config) as proc:
        # Everything after the second run's `online` comes from the restarted agent.
        onlines = lambda ms: [i for i, m in enumerate(ms) if m.topic == names.status and m.payload == b"online"]  # noqa: E731
        online = collector.wait_for(lambda ms: len(onlines(ms)) == 2 and onlines(ms)[-1], timeout=30)
        after = collector.wait_for(
            lambda ms: (
                (new := ms[online:])
                and any(m.topic == names.stats for m in new)
                and any(m.topic == names.state("pump") and m.payload for m in new)
                and new
            )
        )
        state = next(m.json() for m in after if m.topic == names.state("pump") and m.payload)
        assert state["alert"]["id"] == opened["id"]
        assert state["acknowledged"]["note"] == "crew on site"
        stats = next(m.json() for m in after if m.topic == names.stats)
        assert (stats["devices_muted"], stats["alerts_open"]) == (1, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
