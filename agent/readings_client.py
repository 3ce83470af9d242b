"""The sensor readings over libmosquitto, on a connection of their own.

paho decodes every packet in Python on a thread that shares the GIL with scoring: on the benchmark's
single-reading messages its receive path alone costs about 45 µs of CPU a message, as much as the agent's
own work. libmosquitto reads, decodes and acknowledges in C with the GIL released, and Python runs only to
hand each message to the inbox: a bare subscriber costs about 14 µs of CPU a message this way against
paho's 46 (docs/bench/report.md, "The readings' client"). The main link (paho) keeps
everything else: availability and its last will, alerts, states, control requests.

The connection mirrors the main link's settings (broker, protocol, credentials, TLS, keepalive, a persistent
session of `mqtt.session_expiry_s`) under the client id `<agent id>-readings`, so the broker queues QoS 1
readings for it while the agent restarts. The broker's ACL must let the agent's account use that id (it
does when access is granted by user name, as in docs/broker/acl.conf).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgevae.agent import libmosquitto as lm
from edgevae.agent.config import MqttConfig
from edgevae.core.errors import ConfigError

logger = logging.getLogger(__name__)

CLIENT_SUFFIX = "-readings"
PACKET_OVERHEAD_BYTES = 4096  # as the main link: a payload's fixed header, topic and properties
FAILURE_LOG_INTERVAL_S = 60.0
STOP_TIMEOUT_S = 5.0


class MosquittoReadings:
    """Subscribes to `cfg.topics` and passes each message's (topic, payload) to `deliver` on libmosquitto's
    network thread; `deliver` may block (backpressure: nothing further is read or acknowledged meanwhile)."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        password: str | None,
        max_payload_bytes: int | None,
        deliver: Callable[[str, bytes], None],
        main_connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self.lib = lib = lm.load()
        self.main_connected = main_connected  # a failure is logged only where the main link is up
        self.cfg = cfg
        self.client_id = client_id
        self.max_payload_bytes = max_payload_bytes
        self.deliver = deliver
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker answered every subscription of this connection
        self._pending: set[int] = set()  # subscription message ids not answered yet
        self.last_error = ""
        self.session_present = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_failure_log = 0.0
        persistent = cfg.session_expiry_s > 0
        self._mosq = lib.mosquitto_new(client_id.encode(), not persistent, None)
        if not self._mosq:
            msg = "libmosquitto could not create a client"
            raise lm.LibraryUnavailable(msg)
        lib.mosquitto_threaded_set(self._mosq, True)  # its loop runs on a Python thread of ours
        lib.mosquitto_int_option(self._mosq, lm.OPT_PROTOCOL_VERSION, lm.PROTOCOL_VERSIONS[cfg.protocol])
        lib.mosquitto_int_option(self._mosq, lm.OPT_TCP_NODELAY, 1)
        if cfg.username:
            self._check(lib.mosquitto_username_pw_set(self._mosq, cfg.username.encode(), _bytes(password)), "username")
        if cfg.use_tls:
            self._tls()
        lib.mosquitto_reconnect_delay_set(self._mosq, 1, cfg.reconnect_max_s, True)
        # ctypes callbacks must outlive the client: kept on the instance.
        self._callbacks = (lm.ON_CONNECT(self._on_connect), lm.ON_DISCONNECT(self._on_disconnect),
                           lm.ON_MESSAGE(self._on_message), lm.ON_SUBSCRIBE(self._on_subscribe))  # fmt: skip
        lib.mosquitto_connect_with_flags_callback_set(self._mosq, self._callbacks[0])
        lib.mosquitto_disconnect_callback_set(self._mosq, self._callbacks[1])
        lib.mosquitto_message_callback_set(self._mosq, self._callbacks[2])
        lib.mosquitto_subscribe_callback_set(self._mosq, self._callbacks[3])

    def _tls(self) -> None:
        tls = self.cfg.tls
        if not tls.ca:
            self.lib.mosquitto_int_option(self._mosq, lm.OPT_TLS_USE_OS_CERTS, 1)
        if tls.ca or tls.cert:
            # libmosquitto wants a CA file or directory beside a client certificate: the system's when none is set.
            cafile, capath = (tls.ca.encode(), None) if tls.ca else (None, b"/etc/ssl/certs")
            rc = self.lib.mosquitto_tls_set(self._mosq, cafile, capath, _bytes(tls.cert), _bytes(tls.key), None)
            self._check(rc, "tls")

    def _check(self, rc: int, key: str) -> None:
        if rc != lm.ERR_SUCCESS:
            msg = f"mqtt.{key}: libmosquitto refused it ({lm.error_string(self.lib, rc)})"
            raise ConfigError(msg)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="readings-libmosquitto", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect cleanly (the broker keeps the session and queues what follows) and end the thread."""
        self._stopping.set()
        self.lib.mosquitto_disconnect(self._mosq)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        if self._thread is None or not self._thread.is_alive():
            self.lib.mosquitto_destroy(self._mosq)
            self._mosq = None

    def is_connected(self) -> bool:
        return self.connected.is_set()

    def _run(self) -> None:
        lib, cfg = self.lib, self.cfg
        props = ctypes.c_void_p(None)
        if cfg.protocol == "5":
            if cfg.session_expiry_s:
                lib.mosquitto_property_add_int32(ctypes.byref(props), lm.PROP_SESSION_EXPIRY_INTERVAL,
                                                 cfg.session_expiry_s)  # fmt: skip
            if self.max_payload_bytes is not None:
                # The broker then drops larger messages itself instead of sending them to us.
                size = self.max_payload_bytes + PACKET_OVERHEAD_BYTES
                lib.mosquitto_property_add_int32(ctypes.byref(props), lm.PROP_MAXIMUM_PACKET_SIZE, size)
        logger.info("readings: connecting to %s as %s (libmosquitto %s)", cfg.broker, self.client_id, lib.version)
        # Blocking, with the GIL released; the host, port and properties are kept for every reconnect.
        rc = lib.mosquitto_connect_bind_v5(self._mosq, cfg.host.encode(), cfg.port, cfg.keepalive, None, props)
        lib.mosquitto_property_free_all(ctypes.byref(props))
        delay = 1.0
        while not self._stopping.is_set():
            if rc == lm.ERR_SUCCESS:
                delay = 1.0
                # Reconnects by itself after a lost connection; returns on a clean disconnect or a fatal error
                # (a refused certificate, an unknown host), which are retried here.
                rc = lib.mosquitto_loop_forever(self._mosq, 1000, 1)
                if self._stopping.is_set():
                    break
            self._failed(lm.error_string(lib, rc))
            self._stopping.wait(delay)
            delay = min(2 * delay, float(cfg.reconnect_max_s))
            if not self._stopping.is_set():
                rc = lib.mosquitto_reconnect(self._mosq)

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        now = time.monotonic()
        if not self.main_connected():
            logger.debug("readings: cannot connect to %s: %s", self.cfg.broker, reason)  # the main link says why
        elif now >= self._next_failure_log:
            self._next_failure_log = now + FAILURE_LOG_INTERVAL_S
            logger.error("readings: cannot connect to %s: %s; retrying", self.cfg.broker, reason)

    def _on_connect(self, _mosq: Any, _obj: Any, rc: int, flags: int) -> None:
        if rc != 0:
            self._failed(f"refused by the broker: {self.lib.mosquitto_connack_string(rc).decode()}")
            return
        self.session_present = bool(flags & 1)
        self.subscribed.clear()
        self._pending.clear()
        mid = ctypes.c_int()
        # Renewed on every connect: a clean or expired session has no subscriptions, a resumed one keeps them.
        for topic in self.cfg.topics:
            rc = self.lib.mosquitto_subscribe(self._mosq, ctypes.byref(mid), topic.encode(), int(self.cfg.qos))
            if rc == lm.ERR_SUCCESS:
                self._pending.add(mid.value)
        self.last_error = ""
        self.connected.set()
        resumed = "resumed its session" if self.session_present else "new session"
        logger.info("readings: connected to %s (%s); subscribed to %s", self.cfg.broker, resumed,
                    ", ".join(self.cfg.topics))  # fmt: skip

    def _on_subscribe(self, _mosq: Any, _obj: Any, mid: int, count: int, granted: Any) -> None:
        if any(granted[i] >= lm.SUBACK_FAILURE for i in range(count)):
            logger.error("readings: the broker refused the subscription to %s", ", ".join(self.cfg.topics))
        self._pending.discard(mid)
        if not self._pending:
            self.subscribed.set()

    def _on_disconnect(self, _mosq: Any, _obj: Any, rc: int) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            self.last_error = f"disconnected: {lm.error_string(self.lib, rc)}"
            logger.warning("readings: disconnected from %s (%s); reconnecting", self.cfg.broker, self.last_error)

    def _on_message(self, _mosq: Any, _obj: Any, message: Any) -> None:
        try:
            m = message.contents
            try:
                topic = (m.topic or b"").decode()
            except UnicodeDecodeError:
                topic = ""  # matches no filter, so it is counted as bad_topic
            self.deliver(topic, ctypes.string_at(m.payload, m.payloadlen) if m.payloadlen else b"")
        except Exception:
            # An exception cannot cross back into C: ctypes would print it and go on. Logged, the message lost.
            logger.exception("readings: failed to take a message")


def _bytes(value: str | None) -> bytes | None:
    return value.encode() if value else None


def open_readings(
    cfg: MqttConfig, agent_id: str, password: str | None, max_payload_bytes: int | None,
    deliver: Callable[[str, bytes], None], main_connected: Callable[[], bool],
) -> MosquittoReadings | None:  # fmt: skip
    """The libmosquitto subscription that `mqtt.readings_client` asks for; None: the main link (paho) takes
    the readings. Raises ConfigError when libmosquitto is asked for by name and cannot be loaded."""
    if cfg.readings_client == "paho":
        return None
    try:
        return MosquittoReadings(cfg, agent_id + CLIENT_SUFFIX, password, max_payload_bytes, deliver, main_connected)
    except lm.LibraryUnavailable as exc:
        if cfg.readings_client == "libmosquitto":
            msg = f"mqtt.readings_client = 'libmosquitto': {exc}"
            raise ConfigError(msg) from exc
        logger.info("readings over paho: %s", exc)
        return None
