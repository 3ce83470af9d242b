"""The agent's TOML config: one pydantic model per table, validated at startup with every error named by key path."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgevae.agent.backends import (
    DEFAULT_BACKEND,
    BackendConfig,
    OrtCpuBackendConfig,
)

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
_TOPIC_CHARS = frozenset("+#/")
MQTT_STRING_BYTES = 65535  # the longest UTF-8 string MQTT carries: a client id, user name or topic

# (key relative to the table that found it, the value, what was expected); "" is the key that table sits at.
Problem = tuple[str, Any, str]


class Problems(ValueError):
    """Raised by a validator with every problem it found; `load_config` reports each under its own key path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {value!r}: {expected}" for key, value, expected in problems))


def _raise_any(problems: list[Problem]) -> None:
    if problems:
        raise Problems(problems)


class Table(BaseModel):
    """Base of every table: unknown keys are errors, and values are taken as TOML typed them ("60" is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class TlsConfig(Table):
    ca: str = Field(default="", description="CA bundle file; empty uses the system CAs")
    cert: str = Field(default="", description="client certificate file for mutual TLS")
    key: str = Field(default="", description="private key file of the client certificate")

    @model_validator(mode="after")
    def _files(self) -> TlsConfig:
        problems: list[Problem] = [
            (name, value, "a readable file") for name, value in self if value and not _readable(value)
        ]
        if bool(self.cert) != bool(self.key):
            problems.append(("key" if self.cert else "cert", "", "set together with `cert`/`key`"))
        _raise_any(problems)
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
    reconnect_max_s: int = Field(default=60, ge=1, description="longest wait between reconnect attempts, in seconds")

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
        _raise_any(self._broker_problems() + self._topic_problems() + self._password_problems())
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
        if any(c in _TOPIC_CHARS for c in self.client_id):
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
        problems += [(key, value, _MQTT_STRING) for key, value in strings if not _mqtt_string(value)]
        return problems

    def _password_problems(self) -> list[Problem]:
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


class ModelConfig(Table):
    bundle: str = Field(
        default="",
        validate_default=True,  # so that a config without a bundle says so
        description="model bundle: a folder with manifest.json, or a .tar.gz",
    )
    backend: BackendConfig = Field(
        default=OrtCpuBackendConfig(),
        description="runtime: `type` names the backend, the other keys are its options",
    )

    @field_validator("bundle")
    @classmethod
    def _bundle_exists(cls, bundle: str) -> str:
        if not bundle:
            raise Problems([("", "", "the path of a model bundle (or --bundle)")])
        if not Path(bundle).exists():
            raise Problems([("", bundle, "an existing bundle folder or .tar.gz")])
        return bundle

    @field_validator("backend", mode="before")
    @classmethod
    def _default_type(cls, backend: Any) -> Any:
        if isinstance(backend, Mapping) and "type" not in backend:
            return {"type": DEFAULT_BACKEND, **backend}
        return backend

    @property
    def backend_key(self) -> str:
        return self.backend.type


class DetectionConfig(Table):
    trigger: int | None = Field(
        default=None, ge=1, description="windows above threshold in a row that open an alert; left out: the bundle's"
    )
    clear: int | None = Field(
        default=None, ge=1, description="windows below threshold in a row that end an alert; left out: the bundle's"
    )
    max_batch: int = Field(default=256, ge=1, description="most windows scored in one backend call")
    max_gap_periods: float = Field(
        default=10.0,
        ge=0,
        description="a gap longer than this many sample periods restarts a device's window; 0: never",
    )
    unknown_channels: Literal["drop", "ignore"] = Field(
        default="drop",
        description="a reading with channels the model does not know: drop it (counted) or ignore them",
    )
    timestamp_unit: Literal["auto", "s", "ms"] = Field(
        default="auto",
        description="unit of ts: seconds or milliseconds since the epoch; auto reads ts >= 1e11 as milliseconds",
    )
    max_future_s: float = Field(
        default=300.0,
        ge=0,
        description="readings further ahead of the agent's clock than this are dropped (future_ts); 0: never",
    )
    reanchor_after: int = Field(
        default=30,
        ge=1,
        description="backwards readings in a row after which a device's clock is believed to have stepped back",
    )


class LimitsConfig(Table):
    max_payload_bytes: int = Field(default=65536, ge=64, description="larger messages are dropped")
    max_readings_per_message: int = Field(
        default=1000, ge=1, description="batched messages with more readings are dropped"
    )
    max_devices: int = Field(default=1000, ge=1, description="readings from further devices are dropped")
    device_idle_s: float = Field(
        default=3600.0,
        ge=0,
        description="a device silent this long is forgotten and frees its slot (not while an alert is open); 0: never",
    )
    queue_size: int = Field(default=10000, ge=1, description="messages held between the network thread and scoring")


class StatsConfig(Table):
    interval_s: float = Field(default=60.0, gt=0, description="seconds between retained stats messages")


class LogConfig(Table):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")
    drop_warning_interval_s: float = Field(
        default=60.0, ge=0, description="at most one warning per drop reason in this many seconds"
    )


class Config(Table):
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="broker connection and topics")
    model: ModelConfig = Field(default_factory=ModelConfig, description="model bundle and runtime")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="scoring and alerts")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="bounds on untrusted input")
    stats: StatsConfig = Field(default_factory=StatsConfig, description="periodic stats messages")
    log: LogConfig = Field(default_factory=LogConfig, description="logging")

    @model_validator(mode="before")
    @classmethod
    def _validate_left_out_tables(cls, data: Any) -> Any:
        # A table left out is validated from {}, in place, so that its rules run and its errors have key paths
        # (a config without [model] says that the bundle is missing); the default factories are never called.
        if isinstance(data, Mapping):
            return {**{name: {} for name in cls.model_fields}, **data}
        return data

    @property
    def agent_id(self) -> str:
        return self.mqtt.client_id or default_client_id()


MACHINE_ID = Path("/etc/machine-id")


def default_client_id(hostname: str | None = None, machine_id_file: Path = MACHINE_ID) -> str:
    """`edgevae-<hostname>-<first 8 hex of /etc/machine-id>`, or without the suffix where there is none.

    The broker drops a connection when another client connects with its id, so two hosts cloned from one
    image and left with one hostname would take turns throwing each other off. The machine id is the host's
    identity (systemd gives every clone a new one when the image ships an empty /etc/machine-id).

    >>> default_client_id("pump/7", Path("/nonexistent"))
    'edgevae-pump_7'
    """
    name = "".join(c if c not in _TOPIC_CHARS else "_" for c in (hostname or socket.gethostname()))
    try:
        machine = machine_id_file.read_text().strip()[:8]
    except OSError:
        machine = ""
    return f"edgevae-{name}-{machine}" if machine.isalnum() else f"edgevae-{name}"


# --- small helpers ----------------------------------------------------------------------------------------

_MQTT_STRING = f"at most {MQTT_STRING_BYTES} bytes of UTF-8, without U+0000 (an MQTT string)"


def _mqtt_string(text: str) -> bool:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from an undecodable command-line byte
        return False
    return "\0" not in text and len(encoded) <= MQTT_STRING_BYTES


def join_key(path: str, key: int | str) -> str:
    return f"{path}.{key}" if path and key != "" else path or str(key)


def show_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)
