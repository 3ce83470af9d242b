"""What the agent counts: drops by reason (warned about at a bounded rate) and the retained stats message."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgevae.agent.readings import DropReason

logger = logging.getLogger(__name__)

SCHEMA = 1


class DropLog:
    """Count every drop by reason; log at most one warning per reason per `interval_s`, with the number hidden."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.counts: dict[str, int] = {reason.value: 0 for reason in DropReason}
        self._clock = clock
        self._last_warning: dict[DropReason, float] = {}
        self._suppressed: dict[DropReason, int] = {}

    def drop(self, reason: DropReason, source: str, detail: str = "", n: int = 1) -> None:
        self.counts[reason.value] += n
        now = self._clock()
        last = self._last_warning.get(reason)
        if last is not None and now - last < self.interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + n
            return
        self._last_warning[reason] = now
        hidden = self._suppressed.pop(reason, 0)
        if hidden:
            logger.warning(
                "dropped %s from %s: %s (and %d more since the last warning)", reason.value, source, detail, hidden
            )
        else:
            logger.warning("dropped %s from %s: %s", reason.value, source, detail)


@dataclass(frozen=True)
class StatsReport:
    """Published retained on `<prefix>/v1/<agent>/stats` every `stats.interval_s`; counters run since start."""

    agent: str
    time: float  # epoch s
    uptime_s: float
    model: dict[str, str]  # id, version, backend
    devices: int
    queue_depth: int
    readings: int
    readings_per_s: float  # over the last interval
    windows_scored: int
    batches: int
    alerts: int  # opened
    alerts_open: int
    alerts_muted: int  # opened while their device was muted: recorded, not published
    devices_muted: int
    gap_resets: int
    scoring_errors: int
    dropped: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)  # by kind: alert, stats, status
    publish_deferred: dict[str, int] = field(default_factory=dict)  # QoS 1 held while disconnected
    publish_failed: dict[str, int] = field(default_factory=dict)
    # Alerts and ends on disk until the broker acknowledges them: depth, bytes, in_flight, delivered (since
    # start), dropped (oldest deleted unsent when full), rejected (refused by the broker)
    outbox: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)  # control requests: ok, refused, queue_full
    drift: dict[str, int] = field(default_factory=dict)  # devices per drift verdict; empty: no distribution
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        data = {"schema": fields.pop("schema"), **fields}
        for key in ("time", "uptime_s", "readings_per_s"):
            data[key] = round(data[key], 3)
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


class RateMeter:
    """Events per second between successive `rate` calls."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t = clock()
        self._n = 0

    def rate(self, total: int) -> float:
        now = self._clock()
        elapsed = now - self._t
        value = (total - self._n) / elapsed if elapsed > 0 else 0.0
        self._t, self._n = now, total
        return value
