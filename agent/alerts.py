"""The alert message: a typed, versioned payload, and the only place it is turned into JSON."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from edgevae.agent.bundle import Manifest
from edgevae.agent.detector import AlertEvent

SCHEMA = 1
TOP_CHANNELS = 3
# Alert ids are uuid5 names under this namespace, so the same alert always gets the same id.
_NAMESPACE = uuid.UUID("6f0d3c2e-54f4-4d8c-9a53-2b8f1e7c0a11")


@dataclass(frozen=True)
class ChannelShare:
    channel: str
    share: float  # this channel's part of the window's summed channel_error, 0..1


@dataclass(frozen=True)
class Alert:
    """Published QoS 1 on `<prefix>/v1/<agent>/devices/<device>/alert`. `ended`, `duration_s` and `reason`
    appear only on `end`."""

    type: Literal["alert", "end"]
    id: str  # the same on an alert and its end
    agent: str
    device: str
    started: float  # epoch s: end of the first anomalous window of the run that opened the alert
    window_start: float  # epoch s: the window that opened (alert) or closed (end) it
    window_end: float
    score: float  # that window's score
    threshold: float
    peak_score: float  # highest score since `started`
    top_channels: tuple[ChannelShare, ...]  # of the opening window (alert), of the peak window (end)
    model_id: str
    model_version: str
    ended: float | None = None
    duration_s: float | None = None
    reason: str | None = None  # why it ended: cleared, or model_changed (restarted with another model)
    schema: int = SCHEMA

    def to_json(self) -> bytes:
        fields: dict[str, Any] = asdict(self)
        data = {"schema": fields.pop("schema"), **fields}
        data["top_channels"] = [asdict(c) for c in self.top_channels]
        data["model"] = {"id": data.pop("model_id"), "version": data.pop("model_version")}
        for key in ("ended", "duration_s", "reason"):
            if data[key] is None:
                del data[key]
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def alert_id(agent: str, device: str, manifest: Manifest, started: float) -> str:
    name = f"{agent}/{device}/{manifest.model_id}/{manifest.model_version}/{started!r}"
    return str(uuid.uuid5(_NAMESPACE, name))


def top_channels(
    channels: tuple[str, ...], channel_error: np.ndarray, k: int = TOP_CHANNELS
) -> tuple[ChannelShare, ...]:
    errors = np.nan_to_num(np.asarray(channel_error, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    total = float(errors.sum())
    shares = errors / total if total > 0 else np.zeros_like(errors)
    order = np.argsort(-shares, kind="stable")[:k]
    return tuple(ChannelShare(channels[i], round(float(shares[i]), 4)) for i in order)


def from_event(event: AlertEvent, manifest: Manifest, agent: str) -> Alert:
    window = event.window
    ending = event.type == "end"
    shown = event.peak if ending else window
    return Alert(
        type=event.type,
        id=alert_id(agent, event.device, manifest, event.started_ts),
        agent=agent,
        device=event.device,
        started=event.started_ts,
        window_start=window.start_ts,
        window_end=window.end_ts,
        score=_finite(window.score),
        threshold=manifest.threshold.value,
        peak_score=_finite(event.peak.score),
        top_channels=top_channels(manifest.channels, shown.channel_error),
        model_id=manifest.model_id,
        model_version=manifest.model_version,
        ended=window.end_ts if ending else None,
        duration_s=window.end_ts - event.started_ts if ending else None,
        reason=event.reason if ending else None,
    )


def _finite(score: float) -> float:
    # JSON has no NaN or infinity; a score that overflowed on extreme input is reported as the largest float.
    return score if math.isfinite(score) else float(np.finfo(np.float64).max)
