"""Home Assistant MQTT discovery: one Home Assistant device per sensor device, with a binary sensor (an
alert is open), the score and the score-to-threshold ratio, all read from the device's retained state and
available while the agent is.

Each entity is a retained `<discovery_prefix>/<component>/<node>/<object>/config` message in the schema of
Home Assistant's MQTT integration (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).
"""

from __future__ import annotations

import json
import re
from typing import Any

from edgevae.agent.bundle import Manifest
from edgevae.agent.install import version
from edgevae.agent.topics import Topics

# Home Assistant's node and object ids: letters, digits, underscore and hyphen only.
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def node_id(text: str) -> str:
    """A node or object id Home Assistant accepts.

    >>> node_id("pump 2/a")
    'pump_2_a'
    """
    return _UNSAFE.sub("_", text)[:64] or "_"


def _template(expression: str) -> str:
    # On the empty payload that clears a state at a clean stop, render "None": Home Assistant's "unknown".
    return "{% if value %}{{ " + expression + " }}{% else %}None{% endif %}"


def discovery_messages(
    topics: Topics, device: str, manifest: Manifest, discovery_prefix: str
) -> list[tuple[str, bytes]]:
    """The retained (topic, payload) configs of one device's entities."""
    uid = f"edgevae_{node_id(topics.agent)}_{node_id(device)}"
    node = f"edgevae_{node_id(topics.agent)}"
    shared: dict[str, Any] = {
        "state_topic": topics.state(device),
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [uid],
            "name": device,
            "manufacturer": "edgevae",
            "model": manifest.model_id,
            "sw_version": manifest.model_version,
        },
        "origin": {"name": "edgevae", "sw_version": version()},
    }
    entities: list[tuple[str, str, dict[str, Any]]] = [
        (
            "binary_sensor",
            "anomaly",
            {
                "name": "Anomaly",
                "device_class": "problem",
                "value_template": _template("value_json.state"),
                "payload_on": "anomalous",
                "payload_off": "normal",
                "json_attributes_topic": topics.state(device),
                "json_attributes_template": "{% if value %}{{ value }}{% else %}{}{% endif %}",
            },
        ),
        (
            "sensor",
            "score",
            {
                "name": "Anomaly score",
                "state_class": "measurement",
                "value_template": _template("value_json.score"),
                "suggested_display_precision": 4,
                "icon": "mdi:chart-bell-curve",
            },
        ),
        (
            "sensor",
            "threshold_ratio",
            {
                "name": "Score to threshold",
                "state_class": "measurement",
                "value_template": _template("value_json.ratio"),
                "suggested_display_precision": 2,
                "icon": "mdi:gauge",
            },
        ),
    ]
    out = []
    for component, key, fields in entities:
        payload = {**fields, **shared, "unique_id": f"{uid}_{key}", "object_id": f"{uid}_{key}"}
        topic = f"{discovery_prefix}/{component}/{node}/{node_id(device)}_{key}/config"
        out.append((topic, json.dumps(payload, separators=(",", ":")).encode()))
    return out
