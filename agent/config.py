"""The agent's TOML config: one pydantic model per table, validated at startup with every error named by key path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgevae.agent.backends import (
    DEFAULT_BACKEND,
    BackendConfig,
    OrtCpuBackendConfig,
)
from edgevae.agent.config_base import CREDENTIALS_ENV, Document, Problems, Table, join_key, show_value, state_directory
from edgevae.agent.config_integrations import ControlConfig, DriftConfig, HomeAssistantConfig, MetricsConfig
from edgevae.agent.config_mqtt import MqttConfig, TlsConfig, default_client_id

__all__ = [
    "CREDENTIALS_ENV",
    "Config",
    "ControlConfig",
    "DriftConfig",
    "HomeAssistantConfig",
    "MetricsConfig",
    "DetectionConfig",
    "LimitsConfig",
    "LogConfig",
    "ModelConfig",
    "SelftestConfig",
    "MqttConfig",
    "StateConfig",
    "Problems",
    "StatsConfig",
    "TlsConfig",
    "UpdatesConfig",
    "default_client_id",
    "join_key",
    "show_value",
]


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
    # Small, because a backlog waits at the broker (backpressure, below), which keeps it across a restart too:
    # 4 MiB holds a few hundred full batches of windows, and under a 100-reading backlog the agent peaked at
    # 97 MiB resident with it against 158 MiB with 64 MiB (docs/bench), at the same speed, dropping nothing.
    queue_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64,
        description="payload bytes held between the network thread and scoring; more waits, then is dropped",
    )
    # While paho's thread waits it acknowledges nothing, so the broker holds further messages for the session
    # (up to its max_queued_messages) instead of the agent dropping them; and it sends nothing, so a wait must
    # stay well inside the keepalive.
    queue_wait_s: float = Field(
        default=5.0,
        ge=0,
        le=30,
        description="when the queue is full, how long the network thread waits for room before a message is "
        "dropped as queue_full; 0: drop at once",
    )

    @model_validator(mode="after")
    def _queue_holds_a_message(self) -> LimitsConfig:
        if self.queue_bytes < self.max_payload_bytes:
            expected = f"at least limits.max_payload_bytes ({self.max_payload_bytes}), or no message fits"
            raise Problems([("queue_bytes", self.queue_bytes, expected)])
        return self


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """Where the agent keeps its state when `state.directory` is empty (`state_directory("edgevae")`)."""
    return state_directory("edgevae", environ)


class StateConfig(Table):
    directory: str = Field(
        default="",
        description=(
            "where the outbox and open alerts are kept; empty: $STATE_DIRECTORY (systemd's StateDirectory=),"
            " else $XDG_STATE_HOME/edgevae, else ~/.local/state/edgevae"
        ),
    )
    outbox_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=65536,
        description="alerts and ends kept for the broker at most; when full, the oldest unsent ones are dropped",
    )

    @property
    def path(self) -> Path:
        return Path(self.directory) if self.directory else default_directory()


class UpdatesConfig(Table):
    trusted_root: str = Field(
        default="",
        description="the model repository's root.json installed with the device; empty: no model updates",
    )
    transport: Literal["mqtt", "http"] = Field(
        default="mqtt",
        description="mqtt: the repository's retained mirror on the agent's broker; http: a web server (`url`)",
    )
    url: str = Field(
        default="", description="base URL of the repository (http transport): <url>/metadata/, <url>/targets/"
    )
    group: str = Field(default="default", description="the fleet group this device takes releases for")
    hardware_id: str = Field(default="", description="matched against a release's hardware ids; empty: any")
    max_bundle_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="larger bundles are refused")
    poll_s: float = Field(
        default=300.0, gt=0, description="seconds between repository checks (mqtt: also on every change)"
    )
    shadow_s: float = Field(default=600.0, ge=0, description="a candidate scores beside the active model this long")
    shadow_min_windows: int = Field(default=100, ge=1, description="and at least this many windows, before its verdict")
    max_alert_rate_ratio: float = Field(
        default=10.0, gt=0, description="shadow fails above this many times the active model's alert rate"
    )
    min_alert_rate: float = Field(
        default=0.01, ge=0, le=1, description="would-be alert rates at or below this always pass shadow"
    )
    max_latency_ratio: float = Field(default=5.0, gt=0, description="shadow fails when this many times slower")
    selftest_max_normal_flagged: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a new model that flags more of the self-test's normal windows than this share is refused",
    )
    selftest_min_caught: float = Field(
        default=0.5, ge=0, le=1, description="a new model that catches less of the injected faults is refused"
    )
    probation_s: float = Field(
        default=3600.0, ge=0, description="a committed model that restarts or fails within this long is rolled back"
    )

    @model_validator(mode="after")
    def _transport(self) -> UpdatesConfig:
        problems = []
        if self.trusted_root and not os.path.isfile(self.trusted_root):
            problems.append(("trusted_root", self.trusted_root, "a readable root.json file"))
        if self.trusted_root and self.transport == "http" and not self.url.startswith(("http://", "https://")):
            problems.append(("url", self.url, "an http:// or https:// URL (transport http)"))
        if problems:
            raise Problems(problems)
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.trusted_root)


class SelftestConfig(Table):
    enabled: bool = Field(
        default=True, description="run the detection self-test (retained on <prefix>/v1/<agent>/health)"
    )
    interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="seconds between self-tests, besides at start and after a model swap; 0: only then",
    )
    magnitude: float = Field(default=3.0, gt=0, description="size of the injected faults, in standard deviations")
    windows: int = Field(
        default=64, ge=1, le=4096, description="normal windows sampled from the bundle's generator per self-test"
    )


class StatsConfig(Table):
    interval_s: float = Field(default=60.0, gt=0, description="seconds between retained stats messages")


class LogConfig(Table):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")
    drop_warning_interval_s: float = Field(
        default=60.0, ge=0, description="at most one warning per drop reason in this many seconds"
    )


class Config(Document):
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="broker connection and topics")
    model: ModelConfig = Field(default_factory=ModelConfig, description="model bundle and runtime")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="scoring and alerts")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="bounds on untrusted input")
    state: StateConfig = Field(default_factory=StateConfig, description="durable state: outbox and open alerts")
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig, description="signed model updates (TUF)")
    selftest: SelftestConfig = Field(default_factory=SelftestConfig, description="the detection self-test")
    stats: StatsConfig = Field(default_factory=StatsConfig, description="periodic stats messages")
    log: LogConfig = Field(default_factory=LogConfig, description="logging")
    control: ControlConfig = Field(default_factory=ControlConfig, description="control requests over MQTT")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant MQTT discovery"
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="drift from the training distribution")

    @property
    def agent_id(self) -> str:
        return self.mqtt.client_id or default_client_id()
