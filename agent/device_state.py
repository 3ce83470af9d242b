"""The retained per-device state: `normal` or `anomalous` (with the open alert), the latest score, and what
operators did about it (acknowledged, muted).

A consumer that connects late, or Home Assistant after a restart, reads this topic and knows at once what is
open now; the alert topic carries the events. The state is published when it changes (an alert opens or
ends, an acknowledgement, a mute) and the latest score at most every `interval_s`; at a clean stop every
device's state is cleared, because an agent that is not scoring cannot vouch for it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from edgevae.agent.alerts import Alert, ChannelShare
from edgevae.agent.detector import WindowResult
from edgevae.agent.topics import Topics

SCHEMA = 1


@dataclass(frozen=True)
class Acknowledgement:
    alert_id: str
    by: str
    time: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "by": self.by, "time": self.time, "note": self.note}


@dataclass
class _Device:
    latest: WindowResult | None = None
    alert: Alert | None = None  # the open alert, as it was announced
    peak: float = 0.0  # the open alert's highest score so far (the announcement's, then later windows')
    ack: Acknowledgement | None = None
    muted_until: float = 0.0  # epoch s; 0 when not muted
    dirty: bool = True
    next_publish: float = 0.0  # monotonic


class DeviceStates:
    def __init__(self, topics: Topics, threshold: float, interval_s: float) -> None:
        self.topics = topics
        self.threshold = threshold
        self.interval_s = interval_s  # 0: publish only when the state changes
        self._devices: dict[str, _Device] = {}
        self.published_devices: set[str] = set()  # whose retained state is on the broker

    def _get(self, device: str) -> _Device:
        return self._devices.setdefault(device, _Device())

    def observe(self, windows: list[WindowResult], alerts: list[Alert]) -> None:
        for window in windows:
            state = self._get(window.device)
            state.latest = window
            if state.alert is not None:
                state.peak = max(state.peak, window.score)
            if state.next_publish == 0.0:
                state.dirty = True  # first window of a device: say it is being watched
        for alert in alerts:
            state = self._get(alert.device)
            state.dirty = True
            if alert.type == "alert":
                # The pass's windows after the opening one count too: they were scored before it was known.
                later = [w.score for w in windows if w.device == alert.device and w.end_ts > alert.window_end]
                state.alert, state.ack, state.peak = alert, None, max([alert.peak_score, *later])
            elif state.alert is None or state.alert.id == alert.id:
                state.alert, state.ack = None, None

    def resume(self, alert: Alert, ack: Acknowledgement | None) -> None:
        """An alert still open from before a restart."""
        state = self._get(alert.device)
        state.alert, state.ack, state.dirty, state.peak = alert, ack, True, alert.peak_score

    def open_alert(self, device: str) -> Alert | None:
        state = self._devices.get(device)
        return state.alert if state is not None else None

    def find_alert(self, alert_id: str) -> Alert | None:
        return next((s.alert for s in self._devices.values() if s.alert and s.alert.id == alert_id), None)

    def acknowledge(self, device: str, ack: Acknowledgement) -> None:
        state = self._get(device)
        state.ack, state.dirty = ack, True

    def acknowledgement(self, device: str) -> Acknowledgement | None:
        state = self._devices.get(device)
        return state.ack if state is not None else None

    def mute(self, device: str, until: float) -> None:
        state = self._get(device)
        state.muted_until, state.dirty = until, True

    def is_muted(self, device: str, now: float | None = None) -> bool:
        state = self._devices.get(device)
        return state is not None and state.muted_until > (time.time() if now is None else now)

    def muted(self) -> dict[str, float]:
        now = time.time()
        return {d: s.muted_until for d, s in self._devices.items() if s.muted_until > now}

    def forget(self, device: str) -> None:
        """A device no longer watched; a running mute is kept, for when it comes back."""
        state = self._devices.pop(device, None)
        if state is not None and state.muted_until > time.time():
            self._devices[device] = _Device(muted_until=state.muted_until, dirty=False)

    def touch_all(self) -> None:
        for state in self._devices.values():
            state.dirty = True

    def due(self, now: float | None = None) -> list[tuple[str, bytes]]:
        """The (topic, payload) of every state to publish now: changed ones, and scores due a refresh."""
        now = time.monotonic() if now is None else now
        out = []
        wall = time.time()
        for device, state in self._devices.items():
            if state.muted_until and state.muted_until <= wall:
                state.muted_until, state.dirty = 0.0, True  # a mute that ran out shows at once
            refresh = self.interval_s > 0 and state.latest is not None and now >= state.next_publish
            if not (state.dirty or refresh):
                continue
            out.append((self.topics.state(device), self.payload(device, state)))
            state.dirty = False
            state.next_publish = now + (self.interval_s or math.inf)
            self.published_devices.add(device)
        return out

    def cleared(self) -> list[tuple[str, bytes]]:
        """Empty retained payloads that delete every published state (a clean stop)."""
        topics = [(self.topics.state(d), b"") for d in sorted(self.published_devices)]
        self.published_devices.clear()
        return topics

    def payload(self, device: str, state: _Device) -> bytes:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "state": "anomalous" if state.alert is not None else "normal",
            "agent": self.topics.agent,
            "device": device,
            "time": round(time.time(), 3),
            "threshold": self.threshold,
        }
        if state.latest is not None:
            score = _finite(state.latest.score)
            data["score"] = score
            data["ratio"] = round(score / self.threshold, 4) if self.threshold > 0 else None
            data["window_end"] = state.latest.end_ts
        if state.alert is not None:
            a = state.alert
            data["alert"] = {
                "id": a.id,
                "started": a.started,
                "score": a.score,
                "peak_score": _finite(state.peak),
                "top_channels": [_share(c) for c in a.top_channels],
                "model": {"id": a.model_id, "version": a.model_version},
            }
            data["acknowledged"] = state.ack.to_dict() if state.ack is not None else None
        data["muted_until"] = state.muted_until or None
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def _share(c: ChannelShare) -> dict[str, Any]:
    return {"channel": c.channel, "share": c.share}


def _finite(score: float) -> float:
    return score if math.isfinite(score) else 1.7976931348623157e308
