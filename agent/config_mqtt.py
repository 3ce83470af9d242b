"""The `[mqtt]` table: the broker, the session, credentials, TLS and topics, checked against what MQTT and
paho accept; and the default client id."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edgevae.agent.config_base import (
    CREDENTIALS_ENV,
    MQTT_STRING,
    TOPIC_CHARS,
    Problem,
    Table,
    mqtt_string,
    raise_any,
    readable,
)


class TlsConfig(Table):
    ca: str = Field(default="", description="CA bundle file; empty uses the system CAs")
    cert: str = Field(default="", description="client certificate file for mutual TLS")
    key: str = Field(default="", description="private key file of the client certificate")

    @model_validator(mode="after")
    def _files(self) -> TlsConfig:
        problems: list[Problem] = [
            (name, value, "a readable file") for name, value in self if value and not readable(value)
        ]
        if bool(self.cert) != bool(self.key):
            problems.append(("key" if self.cert else "cert", "", "set together with `cert`/`key`"))
        raise_any(problems)
        return self


class MqttConfig(Table):
    broker: str = Field(
        default="mqtt://localhost:1883",
        description="broker URL: mqtt://host[:port] (default port 1883) or mqtts://host[:port] (8883)",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        default="5", description='MQTT version: "5", or "3.1.1" for a broker that speaks only that'
    )
    client_id: str = Field(
        default="", description="MQTT client id and agent id in output topics; empty: edgevae-<hostname>-<machine id>"
    )
    username: str = Field(default="", description="user name for broker authentication")
    password_file: str = Field(default="", description="file holding the broker password")
    password_credential: str = Field(
        default="", description="name of a systemd credential (LoadCredential=) holding the broker password"
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS files (mqtts:// only)")
    keepalive: int = Field(default=60, ge=1, le=65535, description="keepalive interval in seconds")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of the sensor topic subscriptions")
    # Not strict: a TOML array arrives as a list.
    topics: tuple[str, ...] = Field(
        default=("sensors/+/data",),
        strict=False,
        description="sensor topic filters; the single `+` level of each is the device id",
    )
    topic_prefix: str = Field(default="edgevae", description="first level of every topic the agent publishes")
    state_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="each device's retained state refreshes its score at most this often; 0: only on a change",
    )
    reconnect_max_s: int = Field(default=60, ge=1, description="longest wait between reconnect attempts, in seconds")
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        le=4294967295,  # MQTT 5's Session Expiry Interval is a four-byte integer
        description=(
            "the broker keeps the agent's subscriptions and queues its QoS 1 readings this long while it is away"
            " (reconnecting or restarting); 0: a clean session on every connect"
        ),
    )

    readings_client: Literal["auto", "libmosquitto", "paho"] = Field(
        default="auto",
        description=(
            "the MQTT client that receives the readings: libmosquitto (C; Debian's libmosquitto1), on a"
            " connection of its own, costs less than half of paho's CPU a message; auto: libmosquitto where it"
            " loads, else paho"
        ),
    )

    @field_validator("qos", mode="before")
    @classmethod
    def _qos_is_no_bool(cls, value: Any) -> Any:
        # A Literal of ints compares equal to True and False; `true` is never a QoS.
        if isinstance(value, bool):
            msg = "a bool is not a QoS"
            raise ValueError(msg)  # reported with the field's expectation, like any bad value
        return value

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.broker).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.broker).port or (8883 if self.use_tls else 1883)

    @model_validator(mode="after")
    def _rules(self) -> MqttConfig:
        raise_any(self._broker_problems() + self._topic_problems() + self._password_problems())
        return self

    def _broker_problems(self) -> list[Problem]:
        try:
            url = urlsplit(self.broker)
            port = url.port  # raises ValueError on a port that is not a number in 0..65535
        except ValueError:
            url, port = None, None
        if url is None or url.scheme not in ("mqtt", "mqtts") or not url.hostname or port == 0:
            return [("broker", self.broker, "a URL mqtt://host[:port] or mqtts://host[:port]")]
        if url.username or url.password or url.path.strip("/") or url.query:
            return [("broker", self.broker, "only scheme, host and port (credentials go in username/password_file)")]
        if not self.use_tls and self.tls != TlsConfig():
            name, value = next((k, v) for k, v in self.tls if v)
            return [(f"tls.{name}", value, "TLS files only with an mqtts:// broker")]
        return []

    def _topic_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        if any(c in TOPIC_CHARS for c in self.client_id):
            problems.append(("client_id", self.client_id, "an id without '/', '+' or '#' (it is a topic level)"))
        if not self.topics:
            problems.append(("topics", list(self.topics), "at least one topic filter"))
        for i, topic in enumerate(self.topics):
            levels = topic.split("/")
            if levels.count("+") != 1 or any(lv != "+" and ("+" in lv or "#" in lv) for lv in levels):
                problems.append((f"topics[{i}]", topic, "a topic filter with exactly one `+` level (the device id)"))
        prefix = self.topic_prefix
        if not all(prefix.split("/")) or any(c in "+#" for c in prefix):
            problems.append(("topic_prefix", prefix, "topic levels without wildcards or empty levels"))
        elif prefix.startswith("$"):
            problems.append(("topic_prefix", prefix, "a topic that does not start with '$' (brokers reserve those)"))
        strings = [("client_id", self.client_id), ("username", self.username), ("topic_prefix", prefix)]
        strings += [(f"topics[{i}]", topic) for i, topic in enumerate(self.topics)]
        problems += [(key, value, MQTT_STRING) for key, value in strings if not mqtt_string(value)]
        return problems

    def _password_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.password_file and self.password_credential:
            problems.append(("password_credential", self.password_credential, "left out when password_file is set"))
        if self.password_file and not readable(self.password_file):
            problems.append(("password_file", self.password_file, "a readable file"))
        if self.password_credential:
            directory = os.environ.get(CREDENTIALS_ENV)
            if not directory:
                expected = f"a credential name, with ${CREDENTIALS_ENV} set (systemd LoadCredential=)"
                problems.append(("password_credential", self.password_credential, expected))
            elif "/" in self.password_credential or not readable(os.path.join(directory, self.password_credential)):
                expected = f"the name of a readable file in ${CREDENTIALS_ENV} ({directory})"
                problems.append(("password_credential", self.password_credential, expected))
        if (self.password_file or self.password_credential) and not self.username:
            problems.append(("username", "", "a user name when a password is configured"))
        return problems


MACHINE_ID = Path("/etc/machine-id")


def default_client_id(hostname: str | None = None, machine_id_file: Path = MACHINE_ID) -> str:
    """`edgevae-<hostname>-<first 8 hex of /etc/machine-id>`, or without the suffix where there is none.

    The broker drops a connection when another client connects with its id, so two hosts cloned from one
    image and left with one hostname would take turns throwing each other off. The machine id is the host's
    identity (systemd gives every clone a new one when the image ships an empty /etc/machine-id).

    >>> default_client_id("pump/7", Path("/nonexistent"))
    'edgevae-pump_7'
    """
    name = "".join(c if c not in TOPIC_CHARS else "_" for c in (hostname or socket.gethostname()))
    try:
        machine = machine_id_file.read_text().strip()[:8]
    except OSError:
        machine = ""
    return f"edgevae-{name}-{machine}" if machine.isalnum() else f"edgevae-{name}"
