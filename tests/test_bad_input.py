"""Every kind of bad input over MQTT is counted under its reason, and the agent goes on scoring correctly."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_fixtures import (
    CHANNELS,
    T0,
    Collector,
    Names,
    Publisher,
    batched_payloads,
    reading,
    stream,
    timestamps,
    windows_for,
)

from edgevae.agent.config import MqttConfig
from edgevae.agent.inbox import Inbox
from edgevae.agent.mqtt import MqttLink
from edgevae.agent.readings import encode_payloads
from edgevae.agent.topics import Topics

GOOD = reading(T0, [20.0, 5.0, 100.0])


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def with_values(**values: Any) -> bytes:
    return encode({"ts": T0, "values": {**GOOD["values"], **values}})


# (device, payload, reason it must be counted under); one drop each.
BAD_INPUT: list[tuple[str, bytes, str]] = [
    ("junk", b"x" * 2000, "oversized"),
    ("junk", b"{ this is not json", "not_json"),
    ("junk", encode({"ts": T0}), "bad_schema"),
    ("junk", encode({"ts": T0, "values": {"temp": 1.0, "flow": 2.0}}), "missing_channel"),
    ("junk", with_values(humidity=40.0), "unknown_channel"),
    ("junk", b'{"ts": 1700000000, "values": {"temp": NaN, "pressure": 5, "flow": 100}}', "not_finite"),
    ("junk", with_values(pressure="5.0"), "not_number"),
    ("junk", encode({"readings": [GOOD] * 6}), "too_many_readings"),
    # an integer time past float range: counted like any bad time, not an exception in the parser
    ("junk", b'{"ts": 1' + b"0" * 309 + b', "values": {"temp": 20, "pressure": 5, "flow": 100}}', "bad_schema"),
    ("junk", with_values(pressure=1e39), "not_finite"),  # finite as float64, infinity in the float32 model
    ("order", encode(reading(T0 + 10, [20.0, 5.0, 100.0])), ""),  # accepted: sets the device's clock
    ("order", encode(reading(T0 + 10, [20.0, 5.0, 100.0])), "duplicate_ts"),
    ("order", encode(reading(T0 + 5, [20.0, 5.0, 100.0])), "out_of_order"),
    ("", encode(GOOD), "bad_topic"),  # an empty device level
    ("d" * 300, encode(GOOD), "bad_topic"),  # a device id too long for its alert topic
]


def test_bad_input_is_counted_and_scoring_goes_on(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent(limits={"max_payload_bytes": 1024, "max_readings_per_message": 5, "max_devices": 2})
    collector.wait_payload(names.status, b"online")
    for device, payload, _ in BAD_INPUT:
        publisher.send(names.data(device), payload)
    expected = dict(Counter(reason for _, _, reason in BAD_INPUT if reason))
    stats = collector.latest_json(names.stats, lambda s: {k: v for k, v in s["dropped"].items() if v} == expected)

    # A real fault still alerts, on the second (and last) device the limits allow.
    rows = 120
    publisher.send(names.data("pump"), batched_payloads(stream(rows, fault=("flow", 40, 70)), per_message=4))
    publisher.send(names.data("one-too-many"), encode(GOOD))
    stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == windows_for(rows))
    got = collector.wait_for(lambda ms: [m.json() for m in ms if m.topic == names.alert("pump")] or None)
    assert got[0]["type"] == "alert"
    assert got[0]["top_channels"][0]["channel"] == "flow"
    stats = collector.latest_json(names.stats, lambda s: s["dropped"]["too_many_devices"] == 1)
    assert {k: v for k, v in stats["dropped"].items() if v} == {**expected, "too_many_devices": 1}
    assert stats["readings"] == 1 + rows
    assert stats["scoring_errors"] == 0


def test_a_full_queue_is_counted_not_blocking() -> None:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=2)
    link = MqttLink(MqttConfig(), Topics("edgevae", "edge-1"), inbox)
    for i in range(5):
        msg = mqtt.MQTTMessage(topic=b"sensors/d/data")
        msg.payload = str(i).encode()
        link._on_message(link.client, None, msg)  # what paho's network thread calls
    assert [inbox.get_nowait()[1] for _ in range(2)] == [b"0", b"1"]
    assert link.queue_full == 3


def test_the_queue_is_bounded_in_bytes_too() -> None:
    inbox = Inbox(maxsize=100, max_bytes=25)
    link = MqttLink(MqttConfig(), Topics("edgevae", "edge-1"), inbox)
    for i in range(5):
        msg = mqtt.MQTTMessage(topic=b"sensors/d/data")
        msg.payload = b"%d" % i * 10
        link._on_message(link.client, None, msg)
    assert (inbox.qsize(), inbox.bytes, link.queue_full) == (2, 20, 3)
    inbox.get_nowait()
    assert inbox.bytes == 10, "a message taken frees its bytes"


def test_one_future_timestamp_does_not_blind_a_device(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent()
    collector.wait_payload(names.status, b"online")
    rows = 120
    values = stream(rows, fault=("flow", 40, 70))
    # One reading stamped 9.9e15 s (a sensor clock gone wrong), then the device's real stream, in milliseconds.
    publisher.send(names.data("pump"), [encode(reading(9.9e15, values[0]))])
    ms = encode_payloads(timestamps(rows) * 1000.0, values, CHANNELS, per_message=4)
    publisher.send(names.data("pump"), ms)
    stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == windows_for(rows))
    assert {k: v for k, v in stats["dropped"].items() if v} == {"future_ts": 1}
    got = collector.wait_for(lambda ms: [m.json() for m in ms if m.topic == names.alert("pump")] or None)
    assert got[0]["top_channels"][0]["channel"] == "flow"


def test_an_oversized_message_is_refused_before_it_is_queued() -> None:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    link = MqttLink(MqttConfig(), Topics("edgevae", "edge-1"), inbox, max_payload_bytes=10)
    for payload in (b"x" * 10, b"x" * 11, b"x" * 2_000_000):
        msg = mqtt.MQTTMessage(topic=b"sensors/d/data")
        msg.payload = payload
        link._on_message(link.client, None, msg)
    assert [inbox.get_nowait()[1] for _ in range(inbox.qsize())] == [b"x" * 10]
    assert link.oversized == 2


def test_idle_devices_free_their_slots(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    """Slots taken by device ids that never come back used to be held forever: after 100,000 junk ids a real
    new device got none of its readings scored."""
    run_agent(limits={"max_devices": 2, "device_idle_s": 1.0})
    collector.wait_payload(names.status, b"online")
    for junk in ("junk-1", "junk-2"):
        publisher.send(names.data(junk), encode(GOOD))
    collector.latest_json(names.stats, lambda s: s["devices"] == 2)
    rows = 120
    publisher.send(names.data("pump"), batched_payloads(stream(rows, fault=("flow", 40, 70)), per_message=4))
    collector.latest_json(names.stats, lambda s: s["dropped"]["too_many_devices"] > 0)  # no slot yet
    time.sleep(1.5)  # the junk ids fall silent past device_idle_s and are forgotten
    publisher.send(names.data("pump"), batched_payloads(stream(rows, fault=("flow", 40, 70)), start=T0 + 1000))
    got = collector.wait_for(lambda ms: [m.json() for m in ms if m.topic == names.alert("pump")] or None)
    assert got[0]["top_channels"][0]["channel"] == "flow"


def test_a_full_queue_waits_for_room() -> None:
    """paho's thread waits (acknowledging nothing, so the broker holds what follows) while scoring makes room."""
    inbox = Inbox(maxsize=1)
    link = MqttLink(MqttConfig(), Topics("edgevae", "edge-1"), inbox, queue_wait_s=5.0)
    taken: list[bytes] = []

    def take_later() -> None:
        for _ in range(3):
            time.sleep(0.05)
            taken.append(inbox.get(timeout=5)[1])

    consumer = threading.Thread(target=take_later)
    consumer.start()
    for i in range(4):
        msg = mqtt.MQTTMessage(topic=b"sensors/d/data")
        msg.payload = str(i).encode()
        link._on_message(link.client, None, msg)
    consumer.join(5)
    assert taken + [inbox.get_nowait()[1]] == [b"0", b"1", b"2", b"3"]
    assert link.queue_full == 0


@pytest.mark.parametrize(("stopping", "within_s"), [(False, 1.0), (True, 0.3)])
def test_a_queue_that_stays_full_drops_after_the_wait(stopping: bool, within_s: float) -> None:
    """Room that never comes: counted as queue_full after queue_wait_s, at once when the link is stopping."""
    inbox = Inbox(maxsize=1)
    link = MqttLink(MqttConfig(), Topics("edgevae", "edge-1"), inbox, queue_wait_s=0.5)
    link._stopping = stopping
    started = time.monotonic()
    for i in range(2):
        msg = mqtt.MQTTMessage(topic=b"sensors/d/data")
        msg.payload = str(i).encode()
        link._on_message(link.client, None, msg)
    waited = time.monotonic() - started
    assert (inbox.qsize(), link.queue_full) == (1, 1)
    assert waited < within_s
    if not stopping:
        assert waited >= 0.5
