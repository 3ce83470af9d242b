"""What the fleet says about itself: every agent's retained availability, stats and update state, read from
the broker, and `edgevae fleet status`'s table of them."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edgevae.agent import topics
from edgevae.export.mqtt_client import close, connect

KINDS = ("availability", "offline_reason", "stats", "update")


@dataclass
class AgentView:
    agent: str
    availability: str = ""  # online, offline
    offline_reason: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    update: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """online; offline (stopped) after a clean stop; offline (connection lost) when the agent vanished."""
        if self.availability != "offline":
            return self.availability
        reason = str(self.offline_reason.get("reason", "")).replace("_", " ")
        return f"offline ({reason})" if reason else "offline"

    @property
    def group(self) -> str:
        return str(self.update.get("group", ""))

    @property
    def model(self) -> str:
        model = self.stats.get("model") or {}
        return f"{model.get('id', '?')} {model.get('version', '?')}" if model else ""

    @property
    def last_seen(self) -> float:
        return float(self.stats.get("time", 0.0))


class FleetWatch:
    """Subscribes to every agent's availability, offline reason, stats and update state and keeps the latest
    of each per agent."""

    def __init__(
        self, url: str, prefix: str = "edgevae", username: str | None = None, password: str | None = None,
        ca_file: Path | None = None, timeout: float = 30.0,
    ) -> None:  # fmt: skip
        self.prefix = prefix
        self.agents: dict[str, AgentView] = {}
        self.changed = threading.Condition()
        filters = [(topics.fleet_filter(prefix, kind), 1) for kind in KINDS]

        def subscribe(client: mqtt.Client) -> None:
            client.subscribe(filters)

        self.client = connect(url, username, password, ca_file, timeout, subscribe, self._on_message)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(self.prefix, msg.topic)
        if parsed is None or parsed[1] or parsed[2] not in KINDS or not msg.payload:
            return
        agent, _, kind = parsed
        with self.changed:
            view = self.agents.setdefault(agent, AgentView(agent))
            if kind == "availability":
                view.availability = msg.payload.decode(errors="replace")
            else:
                try:
                    data = json.loads(msg.payload)
                except ValueError:
                    return
                if isinstance(data, dict):
                    setattr(view, kind, data)
            self.changed.notify_all()

    def snapshot(self) -> list[AgentView]:
        with self.changed:
            return [
                AgentView(v.agent, v.availability, dict(v.offline_reason), dict(v.stats), dict(v.update))
                for v in self.agents.values()
            ]

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def close(self) -> None:
        close(self.client)


def status_table(agents: list[AgentView], now: float | None = None) -> str:
    """The table `edgevae fleet status` prints, one row per agent, by group then agent."""
    now = time.time() if now is None else now
    rows = [("agent", "status", "group", "model", "running", "update", "last seen")]
    for view in sorted(agents, key=lambda v: (v.group, v.agent)):
        update = view.update
        step = f"{update.get('step', '')} {update.get('release') or ''}".strip()
        if update.get("reason") and step.startswith(("rejected", "rolled_back")):
            step += f": {update['reason'][:60]}"
        seen = f"{now - view.last_seen:.0f} s ago" if view.last_seen else "never"
        rows.append((view.agent, view.status, view.group, view.model, str(update.get("running", "")), step, seen))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def fleet_status(url: str, prefix: str, wait_s: float = 2.0, **auth: Any) -> list[AgentView]:
    """Read what the fleet has retained on the broker (it arrives in one burst on subscribe)."""
    watch = FleetWatch(url, prefix, **auth)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            watch.wait(deadline - time.monotonic())
        return watch.snapshot()
    finally:
        watch.close()
