"""Home Assistant discovery read back from the broker and checked against Home Assistant's documented MQTT
schema; Prometheus metrics scraped over HTTP."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from agent_fixtures import Collector, Names, Publisher, batched_payloads, scrape, stream, windows_for

from edgevae.demo.broker import Broker, free_port

ROWS = 120

# From https://www.home-assistant.io/integrations/binary_sensor.mqtt/ and .../sensor.mqtt/ and
# https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery: the options each component accepts
# (the ones this project could use), the required ones, and the device classes and state classes.
COMMON = {
    "name", "unique_id", "object_id", "state_topic", "value_template", "availability_topic",
    "payload_available", "payload_not_available", "device", "origin", "icon", "json_attributes_topic",
    "json_attributes_template", "qos", "expire_after", "force_update", "enabled_by_default", "entity_category",
}  # fmt: skip
ALLOWED = {
    "binary_sensor": COMMON | {"device_class", "payload_on", "payload_off", "off_delay"},
    "sensor": COMMON | {"device_class", "state_class", "unit_of_measurement", "suggested_display_precision"},
}
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}}
BINARY_SENSOR_CLASSES = {"problem", "safety", "running", "connectivity"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
DEVICE_KEYS = {"identifiers", "connections", "name", "manufacturer", "model", "sw_version", "hw_version", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
TOPIC = re.compile(r"^(?P<prefix>[^/]+)/(?P<component>[a-z_]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?[a-zA-Z0-9_-]+/config$")


def render(template: str, payload: bytes) -> str:
    """As Home Assistant renders a value template: `value` is the payload, `value_json` its JSON."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    value = payload.decode()
    value_json = json.loads(value) if value else None
    return env.from_string(template).render(value=value, value_json=value_json)


def test_home_assistant_discovery_matches_the_documented_schema(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, broker: Broker
) -> None:
    ha = f"homeassistant-{uuid.uuid4().hex[:6]}"
    run_agent(homeassistant={"discovery": True, "discovery_prefix": ha}, mqtt={"state_interval_s": 0.0})
    collector.wait_payload(names.status, b"online")
    publisher.send(names.data("pump 2"), batched_payloads(stream(ROWS, fault=("pressure", 60, ROWS))))
    state = collector.latest_json(names.state("pump 2"), lambda s: s["state"] == "anomalous", timeout=20)
    late = Collector(broker, [f"{ha}/#"])
    try:
        configs = late.wait_for(lambda ms: len(ms) >= 3 and ms)
    finally:
        late.close()
    assert all(m.retain for m in configs)
    by_component: dict[str, list[dict[str, Any]]] = {}
    for m in configs:
        match = TOPIC.match(m.topic)
        assert match, m.topic
        assert match["prefix"] == ha
        payload = m.json()
        component = match["component"]
        by_component.setdefault(component, []).append(payload)
        assert set(payload) <= ALLOWED[component], set(payload) - ALLOWED[component]
        assert REQUIRED[component] <= set(payload)
        assert set(payload["device"]) <= DEVICE_KEYS
        assert payload["device"]["identifiers"]
        assert set(payload["origin"]) <= ORIGIN_KEYS
        assert payload["origin"]["name"] == "edgevae"
        assert payload["state_topic"] == names.state("pump 2")
        assert payload["availability_topic"] == names.status
        assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
        # On the empty payload that clears the state at a clean stop, every value is unknown ("None").
        assert render(payload["value_template"], b"") == "None"
    assert len({p["unique_id"] for ps in by_component.values() for p in ps}) == 3
    assert len({p["device"]["identifiers"][0] for ps in by_component.values() for p in ps}) == 1  # one device

    [anomaly] = by_component["binary_sensor"]
    assert anomaly["device_class"] in BINARY_SENSOR_CLASSES
    raw = collector.on(names.state("pump 2"))[-1].payload
    assert render(anomaly["value_template"], raw) == anomaly["payload_on"] == "anomalous"
    assert render(anomaly["json_attributes_template"], raw) == raw.decode()
    normal = raw.replace(b'"state":"anomalous"', b'"state":"normal"')
    assert render(anomaly["value_template"], normal) == anomaly["payload_off"]
    sensors = {p["unique_id"].rsplit("_", 1)[-1]: p for p in by_component["sensor"]}
    assert {p["state_class"] for p in sensors.values()} <= STATE_CLASSES
    assert float(render(sensors["score"]["value_template"], raw)) == pytest.approx(state["score"])
    assert float(render(sensors["ratio"]["value_template"], raw)) == pytest.approx(state["ratio"])


def test_prometheus_metrics_are_scraped_from_the_loopback_port(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    port = free_port()
    run_agent(metrics={"port": port})
    collector.wait_payload(names.status, b"online")
    publisher.send(names.data("pump"), batched_payloads(stream(ROWS, fault=("pressure", 40, 70))))
    publisher.send(names.data("pump"), [b"not json", b"{}"])
    stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == windows_for(ROWS) and s["alerts"])
    got = scrape(port)
    assert got["edgevae_readings_total"][()] == ROWS
    assert got["edgevae_windows_scored_total"][()] == windows_for(ROWS)
    assert got["edgevae_alerts_total"][()] == 1
    assert got["edgevae_dropped_total"][(("reason", "not_json"),)] == 1
    assert got["edgevae_dropped_total"][(("reason", "bad_schema"),)] == 1
    assert got["edgevae_scoring_seconds_count"][()] == got["edgevae_batches_total"][()] == stats["batches"]
    assert got["edgevae_scoring_seconds_bucket"][(("le", "+Inf"),)] == stats["batches"]
    assert got["edgevae_connected"][()] == 1
    assert got["edgevae_outbox_depth"][()] >= 0
    assert got["edgevae_published_total"][(("kind", "alert"),)] >= 1
    [labels] = got["edgevae_model_info"]
    assert dict(labels) == {"id": "tiny-zscore", "version": "1.0.0", "backend": "onnxruntime-cpu"}


def test_a_taken_metrics_port_does_not_stop_scoring(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, caplog: Any
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        service = run_agent(metrics={"port": taken.getsockname()[1]})
        collector.wait_payload(names.status, b"online")
        publisher.send(names.data("pump"), batched_payloads(stream(ROWS)))
        collector.latest_json(names.stats, lambda s: s["windows_scored"] == windows_for(ROWS))
    finally:
        taken.close()
    assert service.metrics is None
    assert any("cannot serve metrics on 127.0.0.1 port" in r.getMessage() for r in caplog.records)


def test_metrics_listen_on_loopback_by_default(run_agent: Callable[..., Any]) -> None:
    port = free_port()
    service = run_agent(metrics={"port": port})
    deadline = time.monotonic() + 10
    while service.metrics is None or service.metrics._server is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert service.metrics._server.server_address[:2] == ("127.0.0.1", port)
