"""The embedded MQTT broker with real paho clients (MQTT 5 and 3.1.1) over loopback, and the agent against it."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_fixtures import Collector, Message, Names, Publisher, batched_payloads, stream, windows_for
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import edgevae.demo.broker
from edgevae.demo.broker import Broker, start_broker

TIMEOUT = 5.0
PROTOCOLS = [pytest.param(mqtt.MQTTv5, id="v5"), pytest.param(mqtt.MQTTv311, id="v311")]
ROWS = 120


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh embedded broker per test; it also replaces the session's mosquitto for conftest's agent fixtures."""
    with start_broker(prefer="embedded") as running:
        assert running.kind == "embedded"
        yield running


class Events:
    """What one client's callbacks report. Kept apart from `Client` so paho holds no reference back to it: a
    reference cycle would leave paho's sockets for the garbage collector, and a ResourceWarning."""

    def __init__(self) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected, self.disconnected = threading.Event(), threading.Event()
        self.disconnect_reasons: list[Any] = []
        self.acks: dict[int, list[Any]] = {}
        self.cond = threading.Condition()

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.set()

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnect_reasons.append(reason)
        self.disconnected.set()

    def on_ack(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self.cond:
            self.acks[mid] = list(codes)
            self.cond.notify_all()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)


class Client:
    """A paho client on its own network thread; tests wait on what its callbacks report, never on sleeps."""

    def __init__(self, broker: Broker, protocol: MQTTProtocolVersion, client_id: str = "") -> None:
        self.broker, self.protocol, self.events = broker, protocol, Events()
        # No reconnects: a test that drops a connection wants it to stay dropped.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, reconnect_on_failure=False
        )
        self.client.on_connect = self.events.on_connect
        self.client.on_disconnect = self.events.on_disconnect
        self.client.on_subscribe = self.client.on_unsubscribe = self.events.on_ack
        self.client.on_message = self.events.on_message

    def start(self) -> Client:
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self.events.connected.wait(TIMEOUT), "no CONNACK"
        return self

    def _wait_ack(self, mid: int) -> list[Any]:
        with self.events.cond:
            assert self.events.cond.wait_for(lambda: mid in self.events.acks, TIMEOUT), f"no ack of mid {mid}"
            return self.events.acks.pop(mid)

    def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS (or failure code) of each filter."""
        _, mid = self.client.subscribe([(f, qos) for f in filters])
        assert mid is not None
        return [int(code.value) for code in self._wait_ack(mid)]

    def unsubscribe(self, topic_filter: str) -> None:
        _, mid = self.client.unsubscribe(topic_filter)
        assert mid is not None
        self._wait_ack(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish; for QoS 1 and 2 wait until paho's on_publish has fired for it (the broker acknowledged it)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()

    def next(self) -> mqtt.MQTTMessage:
        try:
            return self.events.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no message within {TIMEOUT} s")

    def until(self, topic: str) -> list[mqtt.MQTTMessage]:
        """Every message up to and including the first on `topic`. A publisher's messages reach a subscriber in
        order, so a sentinel published last proves whether an earlier message was delivered."""
        seen = [self.next()]
        while seen[-1].topic != topic:
            seen.append(self.next())
        return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(protocol: MQTTProtocolVersion, client_id: str = "", start: bool = True) -> Client:
        made.append(Client(broker, protocol, client_id))
        return made[-1].start() if start else made[-1]

    yield make
    for c in made:
        c.close()


def wait_broker_closes(sock: socket.socket) -> None:
    """Read until the broker ends the connection; a timeout fails the test."""
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(ConnectionResetError):  # closing with bytes left unread resets the connection
        while sock.recv(4096):
            pass


def raw_connect(
    client_id: bytes, keepalive: int = 60, will: tuple[bytes, bytes] | None = None, flags: int = 0x02
) -> bytes:
    """A 3.1.1 CONNECT by hand (clean session; a will goes out at QoS 1), for what paho will not send."""

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    flags |= 0x0C if will else 0
    body = field(b"MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + field(client_id)
    body += field(will[0]) + field(will[1]) if will else b""
    return bytes([0x10, len(body)]) + body


# --- publish and subscribe ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_qos_0_1_and_2_are_delivered_at_the_lower_of_publish_and_subscription(
    clients: Callable[..., Client], protocol: MQTTProtocolVersion
) -> None:
    sub, pub = clients(protocol), clients(protocol)
    assert sub.subscribe("q/one", "q/two", qos=2) == [1, 1]  # QoS 2 subscriptions are granted QoS 1
    assert sub.subscribe("q/zero", qos=0) == [0]
    for qos in (0, 1, 2):  # publish() waits for on_publish: PUBACK for QoS 1, PUBREC/PUBCOMP for QoS 2
        pub.publish("q/one", b"%d" % qos, qos=qos)
    pub.publish("q/zero", b"1", qos=1)
    got = [(m.topic, m.payload, m.qos, m.retain) for m in (sub.next() for _ in range(4))]
    assert got == [
        ("q/one", b"0", 0, False),
        ("q/one", b"1", 1, False),
        ("q/one", b"2", 1, False),
        ("q/zero", b"1", 0, False),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_subscriber_gets_messages_in_publish_order(
    clients: Callable[..., Client], protocol: MQTTProtocolVersion
) -> None:
    subs, pub = [clients(protocol) for _ in range(2)], clients(protocol)
    for sub in subs:
        sub.subscribe("order/#")
    # One QoS: paho itself holds QoS 1 messages back past its in-flight window while QoS 0 ones go out.
    for i in range(300):
        pub.client.publish(f"order/{i % 3}", b"%d" % i, qos=1)
    for sub in subs:
        assert [int(sub.next().payload) for _ in range(300)] == list(range(300))


# (filter, topic, delivered)
WILDCARDS = [
    ("a/b", "a/b", True),  # no wildcard: the same topic
    ("a/b", "a/c", False),  # no wildcard: another topic
    ("A/b", "a/b", False),  # topics are case-sensitive
    ("a/+", "a/b", True),  # + fills one level
    ("a/+", "a/b/c", False),  # ... exactly one
    ("a/+", "a", False),  # ... which must exist
    ("a/+", "a/", True),  # an empty level is a level
    ("+/+", "/b", True),  # ... also the first one
    ("a/+/c", "a/b/d", False),  # + in the middle, a later level differs
    ("a/#", "a", True),  # # matches the parent level too
    ("a/#", "a/b/c", True),  # ... and any depth below
    ("+/b/#", "x/b", True),  # + and # together
    ("#", "a/b", True),  # # alone matches every topic
    ("#", "$SYS/load", False),  # ... but not $ topics: wildcards at the first level skip them
    ("+/load", "$SYS/load", False),  # ... nor does +
    ("$SYS/#", "$SYS/load", True),  # a filter that names the $ level matches
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("topic_filter", "topic", "delivered"), WILDCARDS)
def test_wildcards(
    clients: Callable[..., Client], protocol: MQTTProtocolVersion, topic_filter: str, topic: str, delivered: bool
) -> None:
    sub, pub = clients(protocol), clients(protocol)
    sub.subscribe(topic_filter, "sentinel")
    pub.publish(topic, b"x")
    pub.publish("sentinel", b"end")
    assert (topic in [m.topic for m in sub.until("sentinel")]) is delivered


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unsubscribe_stops_delivery(clients: Callable[..., Client], protocol: MQTTProtocolVersion) -> None:
    sub, pub = clients(protocol), clients(protocol)
    sub.subscribe("u/#", "sentinel")
    sub.unsubscribe("u/#")
    pub.publish("u/x", b"x")
    pub.publish("sentinel", b"end")
    assert [m.topic for m in sub.until("sentinel")] == ["sentinel"]


# --- retained messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained_messages_are_stored_replaced_and_deleted(
    clients: Callable[..., Client], protocol: MQTTProtocolVersion
) -> None:
    pub, live = clients(protocol), clients(protocol)
    live.subscribe("r/t")

    def retained_for_a_new_subscriber() -> list[tuple[bytes, bool]]:
        """Retained messages follow the SUBACK, ahead of anything published later, so a live marker ends them."""
        late = clients(protocol)
        late.subscribe("r/#")
        pub.publish("r/marker", b"live")
        return [(bytes(m.payload), bool(m.retain)) for m in late.until("r/marker")[:-1]]

    pub.publish("r/t", b"one", retain=True)
    first = live.next()
    assert (first.payload, first.retain) == (b"one", False)  # a live delivery is not flagged retained
    assert retained_for_a_new_subscriber() == [(b"one", True)]
    pub.publish("r/t", b"two", retain=True)
    assert retained_for_a_new_subscriber() == [(b"two", True)]
    pub.publish("r/t", b"", retain=True)  # an empty retained payload deletes the retained message
    assert retained_for_a_new_subscriber() == []


# --- last will and takeover -----------------------------------------------------------------------------


def with_will(client: Client, topic: str, retain: bool = False) -> Client:
    properties = None
    if client.protocol == mqtt.MQTTv5:  # v5 will properties come before the will topic: the broker must skip them
        properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        properties.WillDelayInterval = 0
        properties.UserProperty = ("reason", "test")
    client.client.will_set(topic, b"gone", qos=1, retain=retain, properties=properties)
    return client.start()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_connection_dropped_without_disconnect_sends_the_will(
    clients: Callable[..., Client], protocol: MQTTProtocolVersion
) -> None:
    watcher = clients(protocol)
    watcher.subscribe("will/#")
    dying = with_will(clients(protocol, start=False), "will/dying", retain=True)
    sock = dying.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the connection ends with no DISCONNECT
    will = watcher.next()
    assert (will.topic, will.payload, will.qos) == ("will/dying", b"gone", 1)
    late = clients(protocol)
    late.subscribe("will/dying")
    retained = late.next()  # the will was retained
    assert (retained.payload, retained.retain) == (b"gone", True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_clean_disconnect_sends_no_will(clients: Callable[..., Client], protocol: MQTTProtocolVersion) -> None:
    watcher = clients(protocol)
    watcher.subscribe("will/#", "sentinel")
    leaving = with_will(clients(protocol, start=False), "will/leaving")
    sock = leaving.client.socket()
    assert isinstance(sock, socket.socket)
    # A second descriptor keeps the connection open after paho closes its own, so the broker's close shows.
    with sock.dup() as watch:
        leaving.close()
        wait_broker_closes(watch)  # the broker has acted on the DISCONNECT: a will would be out by now
    clients(protocol).publish("sentinel", b"end")
    assert [m.topic for m in watcher.until("sentinel")] == ["sentinel"]


def test_a_v5_disconnect_with_reason_0x04_sends_the_will(clients: Callable[..., Client]) -> None:
    watcher = clients(mqtt.MQTTv5)
    watcher.subscribe("will/#")
    leaving = with_will(clients(mqtt.MQTTv5, start=False), "will/leaving")
    leaving.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    assert watcher.next().payload == b"gone"


def test_a_client_silent_for_one_and_a_half_keepalives_is_dropped_and_its_will_sent(
    clients: Callable[..., Client], broker: Broker
) -> None:
    watcher = clients(mqtt.MQTTv311)
    watcher.subscribe("will/#")
    with socket.create_connection((broker.host, broker.port)) as sock:
        sock.sendall(raw_connect(b"silent", keepalive=1, will=(b"will/silent", b"gone")))
        started = time.monotonic()
        wait_broker_closes(sock)  # a CONNACK, then nothing from us: no PINGREQ
        assert time.monotonic() - started >= 1.4
    assert watcher.next().payload == b"gone"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_second_connection_with_the_same_client_id_takes_over(
    clients: Callable[..., Client], protocol: MQTTProtocolVersion
) -> None:
    watcher = clients(protocol)
    watcher.subscribe("will/#", "t/twin")
    first = with_will(clients(protocol, client_id="twin", start=False), "will/twin")
    second = clients(protocol, client_id="twin")
    assert first.events.disconnected.wait(TIMEOUT)
    if protocol == mqtt.MQTTv5:
        assert first.events.disconnect_reasons[0] == 0x8E  # session taken over
    # The first connection ended without a DISCONNECT of its own, so its will went out.
    assert watcher.next().payload == b"gone"
    second.publish("t/twin", b"still connected")
    assert watcher.next().payload == b"still connected"
    assert not second.events.disconnected.is_set()


# --- malformed input ------------------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"\x00\x00", id="reserved-type-0"),  # the first packet is not a CONNECT
    pytest.param(b"\x10\xff\xff\xff\xff\x01", id="length-5-bytes"),  # a remaining length longer than 4 bytes
    pytest.param(b"\x10\x80\x80\x80\x01", id="2-MiB"),  # a CONNECT declared at 2 MiB, over the 1 MiB cap
    pytest.param(b"\x10\x05\x00\x04MQT", id="connect-cut-short"),  # the protocol name runs past the packet
    pytest.param(b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x09\x00\x00", id="v5-properties-past-end"),
    pytest.param(raw_connect(b"m", flags=0x03), id="reserved-connect-flag"),  # CONNECT flag bit 0 must be 0
    pytest.param(raw_connect(b"m") + raw_connect(b"m"), id="second-connect"),  # CONNECT only once per connection
    pytest.param(raw_connect(b"m") + b"\x36\x05\x00\x01a\x00\x01", id="publish-qos-3"),  # QoS 3 does not exist
    pytest.param(raw_connect(b"m") + b"\x30\x04\x00\x02\xff\xfe", id="topic-not-utf8"),  # topics are UTF-8
    pytest.param(raw_connect(b"m") + b"\x30\x03\x00\x01#", id="publish-to-wildcard"),  # topic names have none
    pytest.param(raw_connect(b"m") + b"\x80\x06\x00\x01\x00\x01a\x01", id="subscribe-flags-0"),  # must be 2
    pytest.param(raw_connect(b"m") + b"\x82\x02\x00\x01", id="subscribe-no-filter"),  # at least one filter
]


@pytest.mark.parametrize("garbage", MALFORMED)
def test_a_malformed_packet_closes_only_that_connection(
    clients: Callable[..., Client], broker: Broker, garbage: bytes
) -> None:
    sub, pub = clients(mqtt.MQTTv5), clients(mqtt.MQTTv311)
    sub.subscribe("m/#")
    with socket.create_connection((broker.host, broker.port)) as sock:
        sock.sendall(garbage)
        wait_broker_closes(sock)
    pub.publish("m/after", b"still here")
    assert sub.next().payload == b"still here"
    assert not sub.events.disconnected.is_set()
    assert not pub.events.disconnected.is_set()


# --- start_broker and the agent -------------------------------------------------------------------------


def test_start_broker_falls_back_to_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edgevae.demo.broker, "find_mosquitto", lambda: None)
    with start_broker() as running:
        assert running.kind == "embedded"
        Client(running, mqtt.MQTTv5).start().close()
    with pytest.raises(RuntimeError, match="mosquitto is not installed"), start_broker(prefer="mosquitto"):
        pass


def alerts(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/alert")]


def test_the_agent_reports_a_fault_through_the_embedded_broker(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, broker: Broker
) -> None:
    run_agent()
    collector.wait_payload(names.status, b"online")
    late = Collector(broker, [names.status])  # subscribes after the fact: gets the retained status
    try:
        assert late.wait_payload(names.status, b"online").retain
    finally:
        late.close()
    streams = {"pump1": stream(ROWS, phase=0.0), "pump2": stream(ROWS, fault=("pressure", 40, 70), phase=1.0)}
    for device, values in streams.items():
        publisher.send(names.data(device), batched_payloads(values))
    collector.latest_json(names.stats, lambda s: s["windows_scored"] == len(streams) * windows_for(ROWS))
    got = collector.wait_for(lambda ms: len(alerts(ms)) >= 2 and alerts(ms), what="an alert and its end")
    assert [(a["type"], a["device"]) for a in got] == [("alert", "pump2"), ("end", "pump2")]
    assert got[0]["id"] == got[1]["id"]
