"""The broker link (paho-mqtt 2.x, MQTT 5 or 3.1.1): retained availability with a last will, a bounded inbox
for readings and a small one for control requests."""

from __future__ import annotations

import json
import logging
import queue
import socket
import sys
import threading
import time
from collections import Counter
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgevae.agent.config import MqttConfig
from edgevae.agent.inbox import MAX_REQUESTS, Inbox, Request
from edgevae.agent.log_filter import OncePerInterval
from edgevae.agent.topics import Topics

logger = logging.getLogger(__name__)

# A PUBLISH packet is its payload plus a fixed header, the topic and (MQTT 5) properties; the agent's device
# ids and topics are bounded well inside this.
PACKET_OVERHEAD_BYTES = 4096
FAILURE_LOG_INTERVAL_S = 60.0

ONLINE, OFFLINE = b"online", b"offline"
# paho keeps unacknowledged QoS 1 messages in memory; past 65,535 it stalls and loses them, so cap well below.
MAX_OUTSTANDING = 10_000


# `mqtt.protocol` -> paho's protocol. The callbacks below read reason codes, which paho 2 gives for both.
PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


def offline_reason(reason: str, online_since: float) -> bytes:
    """`connection_lost` is set on every connect, so that it is what stays when the agent vanishes (the last
    will can carry only the `offline` availability); a clean stop replaces it with `stopped` first."""
    data = {"reason": reason, "online_since": round(online_since, 3)}
    if reason != "connection_lost":
        data["time"] = round(time.time(), 3)
    return json.dumps(data, separators=(",", ":")).encode()


class MqttLink:
    """Callbacks run on paho's network thread holding its locks, so they block on nothing but room in the
    inbox: `on_message` only puts the message there, waiting up to `queue_wait_s` when it is full (paho
    acknowledges nothing meanwhile, so the broker holds what follows) and then counting it as `queue_full`;
    scoring happens on the service's thread."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        inbox: Inbox,
        password: str | None = None,
        max_payload_bytes: int | None = None,
        control: bool = False,
        queue_wait_s: float = 0.0,
        readings: bool = True,
    ) -> None:
        self.cfg = cfg
        self.readings = readings  # subscribe to the readings (False: another client takes them, see `enqueue`)
        self.queue_wait_s = queue_wait_s
        self.control = control  # subscribe to control requests
        self.max_payload_bytes = max_payload_bytes
        self.oversized = 0  # messages refused before queueing (network thread only)
        # Why the link is down, for the log, the systemd status line and the stats (network thread writes).
        self.last_error = ""
        self.connect_failures = 0
        self._failures_logged = 0
        self._next_failure_log = 0.0
        self.topics = topics
        self.agent_id = agent_id = topics.agent
        self.inbox = inbox
        self.requests: queue.Queue[Request] = queue.Queue(MAX_REQUESTS)
        self.requests_refused = 0  # the request queue was full (network thread only)
        self.online_since = 0.0
        self.connected = threading.Event()
        self.queue_full = 0  # written by the network thread only
        self.rejected = 0  # publishes the broker answered with a failure reason (network thread only)
        self.published: Counter[str] = Counter()
        self.deferred: Counter[str] = Counter()  # QoS 1 while disconnected: kept in memory, sent on reconnect
        self.failed: Counter[str] = Counter()
        # (mid, failure reason or None) of every acknowledged QoS 1 publish, for the outbox (network thread puts).
        self._acks: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()
        self.session_present = False
        self._subscribed: list[str] = []
        self._refused = False  # the last CONNECT was answered with a refusal (network thread only)
        self._stopping = False
        persistent = cfg.session_expiry_s > 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=agent_id,
            protocol=PROTOCOLS[cfg.protocol],
            # MQTT 3.1.1 has the flag on the client; MQTT 5 has clean_start on connect (paho refuses this there).
            clean_session=None if cfg.protocol == "5" else not persistent,
        )
        client.will_set(topics.availability, OFFLINE, qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if cfg.use_tls:
            client.tls_set(ca_certs=cfg.tls.ca or None, certfile=cfg.tls.cert or None, keyfile=cfg.tls.key or None)
        client.reconnect_delay_set(min_delay=1, max_delay=cfg.reconnect_max_s)
        client.max_queued_messages_set(MAX_OUTSTANDING)
        paho_logger = logging.getLogger("paho")
        if not any(isinstance(f, OncePerInterval) for f in paho_logger.filters):
            paho_logger.addFilter(OncePerInterval(FAILURE_LOG_INTERVAL_S))
        client.enable_logger(paho_logger)  # paho's own messages; the same line at most once a minute
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers, and after every disconnect."""
        logger.info("connecting to %s as %s (MQTT %s)", self.cfg.broker, self.agent_id, self.cfg.protocol)
        # CONNECT properties exist in MQTT 5 only: paho refuses them (ValueError) under 3.1.1.
        properties = None
        clean_start: bool | Literal[3] = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self.cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self.max_payload_bytes is not None:
                # The broker then drops larger messages itself instead of sending them to us.
                properties.MaximumPacketSize = self.max_payload_bytes + PACKET_OVERHEAD_BYTES
            # A persistent session: the broker keeps the subscriptions and queues QoS 1 readings while the
            # agent reconnects or restarts, for up to session_expiry_s; clean_start off resumes it, even on
            # the first connect of a restarted agent.
            expiry = self.cfg.session_expiry_s
            clean_start = expiry == 0
            if expiry:
                properties.SessionExpiryInterval = expiry
        self.client.connect_async(
            self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, clean_start=clean_start, properties=properties
        )
        self.client.loop_start()

    def is_connected(self) -> bool:
        return self.connected.is_set()

    def publish_tracked(self, topic: str, payload: bytes, *, kind: str) -> int | None:
        """Publish QoS 1 and return its message id, whose acknowledgement `take_acks` reports; None when the
        client's own queue is full (try again later). Raises ValueError for a message that can never be sent."""
        try:
            info = self.client.publish(topic, payload, qos=1)
        except ValueError:
            self.failed[kind] += 1
            raise
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN: the link went down since the caller looked; paho holds it and sends it on reconnect.
            self.published[kind] += 1
            return info.mid
        return None

    def take_acks(self) -> list[tuple[int, str | None]]:
        acks = []
        while True:
            try:
                acks.append(self._acks.get_nowait())
            except queue.Empty:
                return acks

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        kind: str,
        qos: int = 1,
        retain: bool = False,
        correlation: bytes | None = None,
    ) -> bool:
        """Publish, counting the outcome under `kind`. True if sent or held for the reconnect. `correlation`
        is MQTT 5's correlation data, echoed on a response (ignored under 3.1.1)."""
        properties = None
        if correlation is not None and self.cfg.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except ValueError:
            logger.exception("cannot publish %s on %r", kind, topic)
            self.failed[kind] += 1
            return False
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.published[kind] += 1
            return True
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            self.deferred[kind] += 1
            return True
        self.failed[kind] += 1
        logger.warning("publish of %s on %s failed: %s", kind, topic, mqtt.error_string(info.rc))
        return False

    def stop(
        self, retained: list[tuple[str, bytes]] | None = None, reason: str = "stopped", timeout: float = 5.0
    ) -> None:
        """Publish `retained` (the device states' clearing), the reason and `offline`, then disconnect cleanly
        so that the broker does not send the last will."""
        self._stopping = True
        if self.connected.is_set():
            last = [*(retained or []), (self.topics.offline_reason, offline_reason(reason, self.online_since))]
            last.append((self.topics.availability, OFFLINE))
            infos = [self.client.publish(topic, payload, qos=1, retain=True) for topic, payload in last]
            deadline = time.monotonic() + timeout
            try:
                for info in infos:
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (ValueError, RuntimeError) as exc:
                logger.warning("could not publish the offline availability: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"refused by the broker: {reason_code}"
            self._refused = True
            self._connect_failed()
            return
        sock = client.socket()
        try:
            # paho leaves Nagle on; with delayed ACKs that adds tens of ms to every alert.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        except (AttributeError, OSError) as exc:
            logger.debug("TCP_NODELAY not set: %s", exc)
        self.session_present = bool(getattr(flags, "session_present", False))
        # Subscribing here renews the subscriptions after every reconnect (a clean or expired session has none;
        # a resumed one keeps them, and subscribing again changes nothing).
        subscriptions = [(topic, int(self.cfg.qos)) for topic in self.cfg.topics] if self.readings else []
        if self.control:
            subscriptions.append((self.topics.requests, 1))
        self._subscribed = [topic for topic, _ in subscriptions]
        if subscriptions:
            client.subscribe(subscriptions)
        if not self.readings and self.session_present:
            # A session from before the readings moved to their own connection would deliver them here too.
            client.unsubscribe(list(self.cfg.topics))
        self.online_since = time.time()
        client.publish(self.topics.offline_reason, offline_reason("connection_lost", self.online_since), 1, True)
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self.connected.set()
        self.last_error = ""
        resumed = "resumed its session" if self.session_present else "new session"
        logger.info("connected to %s (%s); subscribed to %s", self.cfg.broker, resumed,
                    ", ".join(self._subscribed) or "nothing")  # fmt: skip

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if not was_connected:
            # After a refused CONNECT paho reports a disconnect too (as "Protocol error"): the refusal, logged
            # with its reason by _on_connect, stays the cause shown. Otherwise the connection was closed before
            # any answer (a proxy, a broker at its connection limit): that is the failed attempt's cause.
            if self._refused:
                self._refused = False
            elif not self._stopping:
                self.last_error = f"closed before the broker answered CONNECT ({reason_code})"
                self._connect_failed()
            return
        if not self._stopping:
            self.last_error = f"disconnected: {reason_code}"
            logger.warning("disconnected from %s (%s); reconnecting", self.cfg.broker, reason_code)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`, so the exception at hand is the cause: refused, DNS,
        # TLS (certificate, hostname), timeout.
        exc = sys.exc_info()[1]
        self.last_error = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._connect_failed()

    def _connect_failed(self) -> None:
        """Count a failed attempt; log the first, then at most one line a minute with the count since."""
        self.connect_failures += 1
        now = time.monotonic()
        if now < self._next_failure_log:
            return
        since = self.connect_failures - self._failures_logged
        self._failures_logged = self.connect_failures
        self._next_failure_log = now + FAILURE_LOG_INTERVAL_S
        logger.error(
            "cannot connect to %s: %s (%d failed attempts; retrying every %d s at most)",
            self.cfg.broker,
            self.last_error,
            since,
            self.cfg.reconnect_max_s,
        )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        for topic, code in zip(self._subscribed, reason_codes, strict=False):
            if code.is_failure:
                logger.error("broker refused the subscription to %s: %s", topic, code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        failure = str(reason_code) if reason_code.is_failure else None
        if failure:
            self.rejected += 1
            logger.warning("broker rejected a publish (mid %d): %s", mid, reason_code)
        self._acks.put((mid, failure))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""  # matches no filter, so it is counted as bad_topic
        action = self.topics.request_action(topic) if self.control else None
        if action is not None:
            self._request(action, msg)
            return
        self.enqueue(topic, bytes(msg.payload))

    def enqueue(self, topic: str, payload: bytes) -> None:
        """Queue a reading message for scoring (on the thread of whichever client received it)."""
        if self.max_payload_bytes is not None and len(payload) > self.max_payload_bytes:
            # Refused here, before it is queued: memory is bounded by the config, not by what the broker lets by.
            self.oversized += 1
            return
        item = (topic, payload)
        if isinstance(self.inbox, Inbox) and self.queue_wait_s > 0:
            # Backpressure: until this returns the client reads nothing further, and the broker holds what follows.
            if not self.inbox.put_waiting(item, self.queue_wait_s, lambda: self._stopping):
                self.queue_full += 1
            return
        try:
            self.inbox.put_nowait(item)
        except queue.Full:
            self.queue_full += 1

    def _request(self, action: str, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) or None
        correlation = getattr(props, "CorrelationData", None) or None
        try:
            self.requests.put_nowait(Request(action, bytes(msg.payload), response_topic, correlation))
        except queue.Full:
            self.requests_refused += 1
