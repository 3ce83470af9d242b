"""One MQTT 5 connection for the training host's tools (the repository mirror, rollouts, fleet status):
connected before it is returned, or an error that says why."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgevae.core.errors import ConfigError, ExportError


def connect(
    url: str,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    timeout: float = 30.0,
    on_connect: Callable[[mqtt.Client], None] | None = None,
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None] | None = None,
) -> mqtt.Client:
    """Connect to `url` (mqtt:// or mqtts://) and start paho's loop; `on_connect` runs on every (re)connect.

    `on_message` is set before connecting: retained messages arrive right after a subscription made in
    `on_connect`, before this function returns."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        msg = f"--mqtt must be mqtt://host[:port] or mqtts://host[:port], got {url!r}"
        raise ConfigError(msg)
    connected = threading.Event()
    answer: list[ReasonCode] = []

    def _on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        answer.append(reason)
        if not reason.is_failure and on_connect is not None:
            on_connect(client)
        connected.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = _on_connect
    if on_message is not None:
        client.on_message = on_message
    if username:
        client.username_pw_set(username, password)
    if parts.scheme == "mqtts":
        client.tls_set(ca_certs=str(ca_file) if ca_file else None)
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    try:
        client.connect(parts.hostname, port)
    except OSError as exc:
        msg = f"cannot reach the broker at {url}: {exc}"
        raise ExportError(msg, remedy="check --mqtt and that the broker is running") from None
    client.loop_start()
    if not connected.wait(timeout):
        close(client)
        msg = f"the broker at {url} did not answer CONNECT within {timeout:.0f} s"
        raise ExportError(msg)
    if answer and answer[-1].is_failure:
        close(client)
        msg = f"the broker at {url} refused the connection: {answer[-1]}"
        raise ExportError(msg, remedy="check --mqtt-username, the password file and the broker's ACL")
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()
