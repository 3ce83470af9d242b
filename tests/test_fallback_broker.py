"""The agent on MQTT 3.1.1: against amqtt, the demo's broker where mosquitto is missing, and against mosquitto."""

from __future__ import annotations

import queue
import signal
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from agent_fixtures import (
    Collector,
    Message,
    Names,
    Publisher,
    agent_document,
    agent_process,
    batched_payloads,
    stream,
    to_toml,
    windows_for,
)

import edgevae.demo.broker
from edgevae.agent.config import MqttConfig
from edgevae.agent.mqtt import MqttLink
from edgevae.agent.topics import Topics
from edgevae.demo.broker import Broker, start_broker

ROWS = 120
MQTT_311 = {"protocol": "3.1.1"}


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """This module's broker, also under conftest's agent fixtures: amqtt (3.1.1 only), then a mosquitto."""
    with start_broker(prefer=request.param) as running:
        assert running.kind == request.param
        yield running


def alerts(messages: list[Message]) -> list[tuple[str, str]]:
    """(type, device) of each alert message, once per alert id and type: QoS 1 is at-least-once."""
    seen: dict[tuple[str, str], str] = {}
    for m in messages:
        if m.topic.endswith("/alert"):
            alert = m.json()
            seen.setdefault((alert["type"], alert["id"]), alert["device"])
    return [(kind, device) for (kind, _), device in seen.items()]


def test_a_fault_raises_an_alert_and_normal_data_none(
    broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher, tmp_path: Path
) -> None:
    """`python -m edgevae.agent` with mqtt.protocol = "3.1.1", as the demo runs it, from start to a clean stop."""
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names, mqtt=MQTT_311)))
    with agent_process(config) as agent:
        collector.wait_payload(names.status, b"online", timeout=30)
        streams = {"normal": stream(ROWS), "faulty": stream(ROWS, fault=("pressure", 40, 70), phase=1.0)}
        for device, values in streams.items():
            publisher.send(names.data(device), batched_payloads(values))
        total = len(streams) * windows_for(ROWS)
        stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == total, timeout=30)
        assert stats["readings"] == len(streams) * ROWS
        assert sum(stats["dropped"].values()) == 0
        assert collector.wait_for(lambda ms: len(alerts(ms)) >= 2 and alerts(ms)) == [
            ("alert", "faulty"),
            ("end", "faulty"),
        ]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0, config.with_suffix(".log").read_text()
    assert f"as {names.agent_id} (MQTT 3.1.1)" in config.with_suffix(".log").read_text()
    collector.wait_stopped(names)
    assert alerts(collector.messages) == [("alert", "faulty"), ("end", "faulty")]


@pytest.mark.parametrize(("protocol", "paho"), [("5", mqtt.MQTTv5), ("3.1.1", mqtt.MQTTv311)])
def test_the_link_speaks_the_configured_protocol(protocol: str, paho: int) -> None:
    link = MqttLink(MqttConfig(protocol=protocol), Topics("edgevae", "edge-1"), queue.Queue())
    assert link.client.protocol == paho


def test_without_mosquitto_the_demo_runs_amqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgevae.demo.broker, "find_mosquitto", lambda: None)
    with start_broker() as running:
        assert (running.kind, running.protocol) == ("amqtt", "3.1.1")


def test_without_any_broker_the_message_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgevae.demo.broker, "find_mosquitto", lambda: None)
    monkeypatch.setattr(edgevae.demo.broker, "amqtt_installed", lambda: False)
    with pytest.raises(RuntimeError, match="neither mosquitto nor amqtt") as info, start_broker():
        pass
    assert "apt-get install mosquitto" in str(info.value)
    assert "pip install 'edgevae[demo]'" in str(info.value)
