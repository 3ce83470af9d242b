"""The tables of what the agent offers besides alerts: control requests, Home Assistant discovery,
Prometheus metrics and the drift report."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from edgevae.agent.config_base import MQTT_STRING, Problems, Table, mqtt_string


class ControlConfig(Table):
    enabled: bool = Field(
        default=True,
        description="answer requests on <prefix>/v1/<agent>/request/<action> (acknowledge, mute, stats, selftest)",
    )


class HomeAssistantConfig(Table):
    discovery: bool = Field(
        default=False, description="publish Home Assistant MQTT discovery for every device the agent scores"
    )
    discovery_prefix: str = Field(default="homeassistant", description="Home Assistant's discovery prefix")

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix or not all(prefix.split("/")) or any(c in "+#" for c in prefix):
            raise Problems([("", prefix, "topic levels without wildcards or empty levels")])
        if not mqtt_string(prefix):
            raise Problems([("", prefix, MQTT_STRING)])
        return prefix


class MetricsConfig(Table):
    port: int = Field(default=0, ge=0, le=65535, description="serve Prometheus metrics on this port; 0: off")
    host: str = Field(
        default="127.0.0.1", description="address the metrics listen on; loopback unless a scraper is remote"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise Problems([("", host, "an IP address such as 127.0.0.1 or ::1")]) from None
        return host


class DriftConfig(Table):
    interval_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds between drift checks of every device's recent readings and scores "
        "(the report is published when a verdict changes)",
    )
