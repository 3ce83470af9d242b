"""The repository over MQTT: retained messages held in memory and served to python-tuf as files.

The training host mirrors its TUF repository as retained QoS 1 messages under `<prefix>/repo/` (see
`edgevae.agent.release`). This link subscribes to them on a connection of its own, apart from the sensor
link: bundles are megabytes, far above the sensor link's packet limit, and a slow transfer must never
hold up scoring. python-tuf then reads them through `MqttFetcher` exactly as it would read a web
server, and verifies everything itself: this transport is trusted for nothing.

A device that was offline gets the latest on reconnect: the broker hands over retained messages on
subscribe. `changed` is set whenever `metadata/timestamp.json` arrives, which is what tells a device that
the repository moved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient import FetcherInterface

from edgevae.agent.config_mqtt import MqttConfig
from edgevae.agent.mqtt import PROTOCOLS
from edgevae.agent.release import REPO_TOPIC

logger = logging.getLogger(__name__)

BASE_URL = "mqtt://repo/"  # what python-tuf is given; paths after it are the mirror's topic levels
CHUNK = 64 * 1024


class RepositoryMirror:
    """Holds the retained repository messages (network thread writes, the update thread reads)."""

    def __init__(
        self, cfg: MqttConfig, client_id: str, password: str | None, max_bytes: int, settle_s: float = 1.0
    ) -> None:
        self.cfg = cfg
        self.max_bytes = max_bytes
        self.settle_s = settle_s
        self.changed = threading.Event()
        self.connected = threading.Event()
        self.refused = 0  # messages dropped because the mirror would exceed max_bytes
        self._files: dict[str, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._last_message = 0.0
        self._root = f"{cfg.topic_prefix}/{REPO_TOPIC}/"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PROTOCOLS[cfg.protocol])
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if cfg.use_tls:
            client.tls_set(ca_certs=cfg.tls.ca or None, certfile=cfg.tls.cert or None, keyfile=cfg.tls.key or None)
        client.reconnect_delay_set(min_delay=1, max_delay=cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.connected.clear()
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        properties = None
        if self.cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # The broker drops what would not fit rather than sending it to us.
            properties.MaximumPacketSize = self.max_bytes + 4096
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, properties=properties)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.error("update link refused by %s: %s", self.cfg.broker, reason_code)
            return
        client.subscribe(self._root + "#", qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            path = msg.topic[len(self._root) :] if msg.topic.startswith(self._root) else ""
        except UnicodeDecodeError:
            return
        if not path:
            return
        payload = bytes(msg.payload)
        with self._lock:
            old = self._files.pop(path, b"")
            self._bytes -= len(old)
            if payload:  # an empty retained message deletes the file
                if self._bytes + len(payload) > self.max_bytes:
                    self.refused += 1
                    logger.warning("repository mirror over %d bytes: %s dropped", self.max_bytes, path)
                else:
                    self._files[path] = payload
                    self._bytes += len(payload)
            self._last_message = time.monotonic()
        if path == "metadata/timestamp.json":
            self.changed.set()

    def settled(self) -> bool:
        """True once no message has arrived for `settle_s`: a mirror publishes the timestamp last, and the
        retained set a new subscription receives comes in one burst."""
        with self._lock:
            return time.monotonic() - self._last_message >= self.settle_s

    def read(self, path: str) -> bytes | None:
        with self._lock:
            return self._files.get(path)


class MqttFetcher(FetcherInterface):
    """python-tuf's fetcher over a `RepositoryMirror`: a missing file is a 404, as a web server would say."""

    def __init__(self, mirror: RepositoryMirror) -> None:
        self.mirror = mirror

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(BASE_URL):
            msg = f"{url} is not in the MQTT repository mirror"
            raise DownloadError(msg)
        data = self.mirror.read(url[len(BASE_URL) :])
        if data is None:
            msg = f"{url[len(BASE_URL) :]} is not (yet) retained on the broker"
            raise DownloadHTTPError(msg, 404)
        return (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
