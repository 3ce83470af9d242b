"""The agent's TOML config: one dataclass per section, validated at startup with every error named by key path."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from edgevae.agent.backends import available_backends, backend_config
from edgevae.agent.schema import BadValue, Problem, SchemaError, build
from edgevae.core.errors import ConfigError, EdgeVAEError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
_TOPIC_CHARS = frozenset("+#/")


@dataclass(frozen=True)
class TlsConfig:
    ca: str = field(default="", metadata={"description": "CA bundle file; empty uses the system CAs"})
    cert: str = field(default="", metadata={"description": "client certificate file for mutual TLS"})
    key: str = field(default="", metadata={"description": "private key file of the client certificate"})

    def check(self) -> list[Problem]:
        problems: list[Problem] = [
            (name, value, "a readable file") for name, value in vars(self).items() if value and not _readable(value)
        ]
        if bool(self.cert) != bool(self.key):
            problems.append(("key" if self.cert else "cert", "", "set together with `cert`/`key`"))
        return problems


@dataclass(frozen=True)
class MqttConfig:
    broker: str = field(
        default="mqtt://localhost:1883",
        metadata={"description": "broker URL: mqtt://host[:port] (default port 1883) or mqtts://host[:port] (8883)"},
    )
    client_id: str = field(
        default="", metadata={"description": "MQTT client id and agent id in output topics; empty: edgevae-<hostname>"}
    )
    username: str = field(default="", metadata={"description": "user name for broker authentication"})
    password_file: str = field(default="", metadata={"description": "file holding the broker password"})
    password_credential: str = field(
        default="",
        metadata={"description": "name of a systemd credential (LoadCredential=) holding the broker password"},
    )
    tls: TlsConfig = field(default_factory=TlsConfig, metadata={"description": "TLS files (mqtts:// only)"})
    keepalive: int = field(default=60, metadata={"description": "keepalive interval in seconds", "ge": 5})
    qos: Literal[0, 1, 2] = field(default=1, metadata={"description": "QoS of the sensor topic subscriptions"})
    topics: tuple[str, ...] = field(
        default=("sensors/+/data",),
        metadata={"description": "sensor topic filters; the single `+` level of each is the device id"},
    )
    topic_prefix: str = field(
        default="edgevae", metadata={"description": "first level of every topic the agent publishes"}
    )
    reconnect_max_s: int = field(
        default=60, metadata={"description": "longest wait between reconnect attempts, in seconds", "ge": 1}
    )

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.broker).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.broker).port or (8883 if self.use_tls else 1883)

    def check(self) -> list[Problem]:
        return self._check_broker() + self._check_topics() + self._check_password()

    def _check_broker(self) -> list[Problem]:
        try:
            url = urlsplit(self.broker)
            _ = url.port  # raises ValueError on a port that is not a number in range
        except ValueError:
            url = None
        if url is None or url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            return [("broker", self.broker, "a URL mqtt://host[:port] or mqtts://host[:port]")]
        if url.username or url.password or url.path.strip("/") or url.query:
            return [("broker", self.broker, "only scheme, host and port (credentials go in username/password_file)")]
        if not self.use_tls and self.tls != TlsConfig():
            name, value = next((k, v) for k, v in vars(self.tls).items() if v)
            return [(f"tls.{name}", value, "TLS files only with an mqtts:// broker")]
        return []

    def _check_topics(self) -> list[Problem]:
        problems: list[Problem] = []
        if any(c in _TOPIC_CHARS for c in self.client_id):
            problems.append(("client_id", self.client_id, "an id without '/', '+' or '#' (it is a topic level)"))
        if not self.topics:
            problems.append(("topics", list(self.topics), "at least one topic filter"))
        for i, topic in enumerate(self.topics):
            levels = topic.split("/")
            if levels.count("+") != 1 or any(lv != "+" and ("+" in lv or "#" in lv) for lv in levels):
                problems.append((f"topics[{i}]", topic, "a topic filter with exactly one `+` level (the device id)"))
        if not all(self.topic_prefix.split("/")) or any(c in "+#" for c in self.topic_prefix):
            problems.append(("topic_prefix", self.topic_prefix, "topic levels without wildcards or empty levels"))
        return problems

    def _check_password(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.password_file and self.password_credential:
            problems.append(("password_credential", self.password_credential, "left out when password_file is set"))
        if self.password_file and not _readable(self.password_file):
            problems.append(("password_file", self.password_file, "a readable file"))
        if self.password_credential:
            directory = os.environ.get(CREDENTIALS_ENV)
            if not directory:
                expected = f"a credential name, with ${CREDENTIALS_ENV} set (systemd LoadCredential=)"
                problems.append(("password_credential", self.password_credential, expected))
            elif "/" in self.password_credential or not _readable(os.path.join(directory, self.password_credential)):
                expected = f"the name of a readable file in ${CREDENTIALS_ENV} ({directory})"
                problems.append(("password_credential", self.password_credential, expected))
        if (self.password_file or self.password_credential) and not self.username:
            problems.append(("username", "", "a user name when a password is configured"))
        return problems


@dataclass(frozen=True)
class ModelConfig:
    bundle: str = field(default="", metadata={"description": "model bundle: a folder with manifest.json, or a .tar.gz"})
    backend: dict[str, Any] = field(
        default_factory=lambda: {"type": "onnxruntime-cpu"},
        metadata={"description": 'runtime table, e.g. {type = "onnxruntime-cpu", threads = 1}'},
    )

    @property
    def backend_key(self) -> str:
        return str(self.backend.get("type", "onnxruntime-cpu"))

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        if not self.bundle:
            problems.append(("bundle", "", "the path of a model bundle (or --bundle)"))
        elif not Path(self.bundle).exists():
            problems.append(("bundle", self.bundle, "an existing bundle folder or .tar.gz"))
        if self.backend_key not in available_backends():
            problems.append(("backend.type", self.backend_key, f"one of {', '.join(available_backends())}"))
            return problems
        try:
            backend_config(self.backend_key, self.backend)
        except SchemaError as exc:
            problems.extend((f"backend.{i.path}", i.value, i.expected) for i in exc.bad_values)
        except EdgeVAEError as exc:
            problems.append(("backend.type", self.backend_key, str(exc)))
        return problems


@dataclass(frozen=True)
class DetectionConfig:
    trigger: int | None = field(
        default=None,
        metadata={
            "description": "windows above threshold in a row that open an alert; left out: the bundle's",
            "ge": 1,
        },
    )
    clear: int | None = field(
        default=None,
        metadata={"description": "windows below threshold in a row that end an alert; left out: the bundle's", "ge": 1},
    )
    max_batch: int = field(default=256, metadata={"description": "most windows scored in one backend call", "ge": 1})
    max_gap_periods: float = field(
        default=10.0,
        metadata={
            "description": "a gap longer than this many sample periods restarts a device's window; 0: never",
            "ge": 0,
        },
    )
    unknown_channels: Literal["drop", "ignore"] = field(
        default="drop",
        metadata={"description": "a reading with channels the model does not know: drop it (counted) or ignore them"},
    )


@dataclass(frozen=True)
class LimitsConfig:
    max_payload_bytes: int = field(default=65536, metadata={"description": "larger messages are dropped", "ge": 64})
    max_readings_per_message: int = field(
        default=1000, metadata={"description": "batched messages with more readings are dropped", "ge": 1}
    )
    max_devices: int = field(
        default=1000, metadata={"description": "readings from further devices are dropped", "ge": 1}
    )
    queue_size: int = field(
        default=10000, metadata={"description": "messages held between the network thread and scoring", "ge": 1}
    )


@dataclass(frozen=True)
class StatsConfig:
    interval_s: float = field(
        default=60.0, metadata={"description": "seconds between retained stats messages", "gt": 0}
    )


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = field(default="info", metadata={"description": "log level"})
    drop_warning_interval_s: float = field(
        default=60.0, metadata={"description": "at most one warning per drop reason in this many seconds", "ge": 0}
    )


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata={"description": "broker connection and topics"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"description": "model bundle and runtime"})
    detection: DetectionConfig = field(default_factory=DetectionConfig, metadata={"description": "scoring and alerts"})
    limits: LimitsConfig = field(default_factory=LimitsConfig, metadata={"description": "bounds on untrusted input"})
    stats: StatsConfig = field(default_factory=StatsConfig, metadata={"description": "periodic stats messages"})
    log: LogConfig = field(default_factory=LogConfig, metadata={"description": "logging"})

    @property
    def agent_id(self) -> str:
        return self.mqtt.client_id or default_client_id()


def default_client_id() -> str:
    return "edgevae-" + "".join(c if c not in _TOPIC_CHARS else "_" for c in socket.gethostname())


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML: {exc}"
        raise ConfigError(msg) from exc


def load_config(data: Mapping[str, Any]) -> Config:
    """Validate a parsed config document; SchemaError lists every problem, each with its key path."""
    bad_values: list[BadValue] = []
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        # An inline secret ends up in backups and version control; say what to do instead of "unknown key".
        bad_values.append(
            BadValue("mqtt.password", "***", "no inline passwords: use password_file or password_credential")
        )
        data = {**data, "mqtt": {k: v for k, v in mqtt.items() if k != "password"}}
    try:
        config = build(Config, dict(data))
    except SchemaError as exc:
        raise SchemaError(bad_values + exc.bad_values) from None
    if bad_values:
        raise SchemaError(bad_values)
    return config


def read_password(mqtt: MqttConfig) -> str | None:
    if mqtt.password_file:
        path = mqtt.password_file
    elif mqtt.password_credential:
        path = os.path.join(os.environ.get(CREDENTIALS_ENV, ""), mqtt.password_credential)
    else:
        return None
    # Files written by editors and `echo` end in a newline that is never part of the secret.
    return Path(path).read_text().rstrip("\r\n")


def _readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)
