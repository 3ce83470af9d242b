"""The fleet's alerts as an operator follows them: what is open now (from every device's retained state)
and what opens and ends from here on (from the alert events), filtered, as table rows or JSON lines.

Pure: `AlertBoard.apply(topic, payload)` takes a message and returns the events it means; the command that
subscribes and prints is `edgevae.cli.alerts`.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass, field
from typing import Any

from edgevae.agent import topics

ENDED_SHOWN = 10


@dataclass(frozen=True)
class Filter:
    devices: tuple[str, ...] = ()  # shell patterns; empty: every device
    agents: tuple[str, ...] = ()
    since: float = 0.0  # epoch s: alerts that started earlier are left out
    open_only: bool = False  # leave out ends

    def admits(self, agent: str, device: str, started: float) -> bool:
        if self.devices and not any(fnmatch.fnmatchcase(device, p) for p in self.devices):
            return False
        if self.agents and not any(fnmatch.fnmatchcase(agent, p) for p in self.agents):
            return False
        return started >= self.since


@dataclass
class Row:
    agent: str
    device: str
    alert_id: str
    started: float
    score: float
    peak_score: float
    top_channels: list[dict[str, Any]]
    acknowledged: dict[str, Any] | None = None
    muted_until: float | None = None
    ended: float | None = None
    reason: str = ""

    def event(self, kind: str, retained: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "event": kind,
            "agent": self.agent,
            "device": self.device,
            "alert_id": self.alert_id,
            "started": self.started,
            "score": self.score,
            "peak_score": self.peak_score,
            "top_channels": self.top_channels,
        }
        if kind == "end":
            data.update(ended=self.ended, duration_s=(self.ended or self.started) - self.started, reason=self.reason)
        if self.acknowledged:
            data["acknowledged"] = self.acknowledged
        if retained:
            data["retained"] = True  # open before the tool started, from the device's retained state
        return data


@dataclass
class AlertBoard:
    prefix: str
    filter: Filter = field(default_factory=Filter)
    open: dict[tuple[str, str], Row] = field(default_factory=dict)
    ended: list[Row] = field(default_factory=list)
    availability: dict[str, str] = field(default_factory=dict)

    def apply(self, topic: str, payload: bytes, retained: bool = False) -> list[dict[str, Any]]:
        """The events this message means (empty for one that changes nothing shown)."""
        parsed = topics.parse(self.prefix, topic)
        if parsed is None:
            return []
        agent, device, leaf = parsed
        if leaf == "availability":
            self.availability[agent] = payload.decode(errors="replace")
            return []
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            return []
        if data is not None and not isinstance(data, dict):
            return []
        if leaf == "state":
            return self._state(agent, device, data, retained)
        if leaf == "alert" and data is not None:
            return self._alert(agent, device, data)
        return []

    def _state(self, agent: str, device: str, data: dict[str, Any] | None, retained: bool) -> list[dict[str, Any]]:
        key = (agent, device)
        if data is None:
            return []  # cleared at a clean stop: the alert stays open in the agent and continues when it is back
        alert = data.get("alert")
        if not isinstance(alert, dict):
            # Normal: the end, if it was published, comes (or came) on the alert topic and is shown from there.
            self.open.pop(key, None)
            return []
        row = self.open.get(key)
        started = float(alert.get("started", 0.0))
        if not self.filter.admits(agent, device, started):
            return []
        if row is None or row.alert_id != alert.get("id"):
            row = self.open[key] = _row(agent, device, alert)
            row.acknowledged, row.muted_until = data.get("acknowledged"), data.get("muted_until")
            row.score = float(data.get("score", row.score))  # the latest window's, as later states give it
            return [row.event("open", retained=retained)]
        acknowledged = data.get("acknowledged")
        row.muted_until = data.get("muted_until")
        row.score = float(data.get("score", row.score))
        row.peak_score = max(row.peak_score, float(alert.get("peak_score", row.peak_score)))
        if acknowledged and acknowledged != row.acknowledged:
            row.acknowledged = acknowledged
            return [row.event("acknowledged")]
        return []

    def _alert(self, agent: str, device: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        key = (agent, device)
        if not self.filter.admits(agent, device, float(data.get("started", 0.0))):
            return []
        if data.get("type") == "alert":
            row = self.open.get(key)
            if row is not None and row.alert_id == data.get("id"):
                return []  # already shown from the retained state
            row = self.open[key] = _row(agent, device, data)
            return [row.event("open")]
        if data.get("type") != "end":
            return []
        row = self.open.pop(key, None) or _row(agent, device, data)
        row.ended = float(data.get("ended", time.time()))
        row.peak_score = float(data.get("peak_score", row.peak_score))
        row.reason = str(data.get("reason", ""))
        if self.filter.open_only:
            return []
        self.ended = [row, *self.ended][:ENDED_SHOWN]
        return [row.event("end")]

    def table(self, now: float | None = None) -> str:
        """The live screen: open alerts, oldest first, then the latest ends."""
        now = time.time() if now is None else now
        head = ("agent", "device", "state", "since", "score", "peak", "top channels", "ack")
        rows = [head]
        for row in sorted(self.open.values(), key=lambda r: r.started):
            state = "OPEN" if self.availability.get(row.agent, "online") == "online" else "open (agent offline)"
            if row.muted_until and row.muted_until > now:
                state += ", muted"
            ack = row.acknowledged.get("by", "yes") if row.acknowledged else ""
            rows.append((row.agent, row.device, state, _age(now - row.started), f"{row.score:.3g}",
                         f"{row.peak_score:.3g}", _channels(row.top_channels), str(ack)))  # fmt: skip
        if not self.filter.open_only:
            for row in self.ended:
                ended = f"ended {_age(now - (row.ended or now))} ago"
                took = f"after {_age((row.ended or row.started) - row.started)}"
                rows.append((row.agent, row.device, ended, took, f"{row.score:.3g}", f"{row.peak_score:.3g}",
                             _channels(row.top_channels), ""))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        opened = len(self.open)
        lines.append(f"{opened} open" + ("" if self.filter.open_only else f", {len(self.ended)} ended shown"))
        return "\n".join(lines)


def _row(agent: str, device: str, alert: dict[str, Any]) -> Row:
    return Row(
        agent, device, str(alert.get("id", "")), float(alert.get("started", 0.0)), float(alert.get("score", 0.0)),
        float(alert.get("peak_score", alert.get("score", 0.0))), list(alert.get("top_channels", [])),
    )  # fmt: skip


def _channels(top: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c.get('channel')} {float(c.get('share', 0)):.0%}" for c in top[:3])


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
