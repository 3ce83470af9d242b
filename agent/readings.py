"""Sensor messages in, validated readings out: every rejected message or reading carries a reason."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)
REANCHOR_LOG_INTERVAL_S = 60.0

# Epoch seconds reach 1e11 in the year 5138, epoch milliseconds passed it in 1973: "auto" reads a time at or
# above it as milliseconds.
MILLISECONDS_FROM = 1e11
TIMESTAMP_UNITS = ("auto", "s", "ms")

# The model computes in float32: a reading beyond its range would become infinity inside the graph.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DropReason(str, Enum):
    """Why a message or reading was not scored. The values are the keys of `dropped` in the stats."""

    OVERSIZED = "oversized"  # message larger than limits.max_payload_bytes
    NOT_JSON = "not_json"  # not UTF-8 JSON
    BAD_SCHEMA = "bad_schema"  # not {"ts": number, "values": {...}} or {"readings": [...]}
    MISSING_CHANNEL = "missing_channel"  # a channel of the model is absent
    UNKNOWN_CHANNEL = "unknown_channel"  # a channel the model does not know (detection.unknown_channels = "drop")
    NOT_FINITE = "not_finite"  # NaN or infinity
    NOT_NUMBER = "not_number"  # a string, bool or null where a number belongs
    DUPLICATE_TS = "duplicate_ts"  # same timestamp as the device's previous reading
    OUT_OF_ORDER = "out_of_order"  # earlier than the device's previous reading
    FUTURE_TS = "future_ts"  # further ahead of the agent's clock than detection.max_future_s
    TOO_MANY_READINGS = "too_many_readings"  # a batch over limits.max_readings_per_message
    TOO_MANY_DEVICES = "too_many_devices"  # a new device beyond limits.max_devices
    BAD_TOPIC = "bad_topic"  # the topic matches no configured filter
    QUEUE_FULL = "queue_full"  # scoring fell behind and the network thread's queue was full


@dataclass(frozen=True)
class Reading:
    ts: float  # epoch seconds
    values: np.ndarray  # (channels,) float64 in the model's channel order


@dataclass
class Parsed:
    readings: list[Reading] = field(default_factory=list)
    drops: list[tuple[DropReason, str]] = field(default_factory=list)  # (reason, detail for the log)


class DeviceTopics:
    """Find the device id in a topic: the level under the `+` of the first filter that matches."""

    def __init__(self, filters: tuple[str, ...] | list[str]) -> None:
        self._filters = [(f.split("/"), f.split("/").index("+")) for f in filters]

    def device(self, topic: str) -> str | None:
        levels = topic.split("/")
        for pattern, plus in self._filters:
            if len(levels) == len(pattern) and all(p in ("+", lv) for p, lv in zip(pattern, levels, strict=True)):
                return levels[plus] or None
        return None


def encode_payloads(
    timestamps: npt.ArrayLike, values: npt.ArrayLike, channels: Sequence[str], per_message: int = 1
) -> list[bytes]:
    """The messages `ReadingParser` reads, for rows of (rows, channels) `values` at epoch-second `timestamps`.

    One reading per message, `{"ts": ..., "values": {"<channel>": ...}}`, or up to `per_message` readings
    as `{"readings": [...]}` when `per_message` > 1.

    >>> encode_payloads([10.0, 10.5], [[1.0, 2.0], [3.0, 4.0]], ["a", "b"], per_message=2)
    [b'{"readings": [{"ts": 10.0, "values": {"a": 1.0, "b": 2.0}}, {"ts": 10.5, "values": {"a": 3.0, "b": 4.0}}]}']
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1).tolist()
    rows = np.asarray(values, dtype=np.float64).reshape(len(ts), len(channels)).tolist()
    names = list(channels)
    docs = [{"ts": t, "values": dict(zip(names, row, strict=True))} for t, row in zip(ts, rows, strict=True)]
    if per_message <= 1:
        return [json.dumps(doc).encode() for doc in docs]
    return [json.dumps({"readings": docs[i : i + per_message]}).encode() for i in range(0, len(docs), per_message)]


class ReadingParser:
    """Parse and validate one message's payload (pure; ordering per device is `OrderGuard`'s job)."""

    def __init__(
        self,
        channels: tuple[str, ...],
        max_payload_bytes: int = 65536,
        max_readings: int = 1000,
        allow_unknown_channels: bool = False,
        timestamp_unit: str = "auto",
    ) -> None:
        if timestamp_unit not in TIMESTAMP_UNITS:
            msg = f"timestamp_unit must be one of {TIMESTAMP_UNITS}, got {timestamp_unit!r}"
            raise ValueError(msg)
        self.timestamp_unit = timestamp_unit
        self.channels = channels
        self._required = frozenset(channels)
        self.max_payload_bytes = max_payload_bytes
        self.max_readings = max_readings
        self.allow_unknown_channels = allow_unknown_channels

    def parse(self, payload: bytes) -> Parsed:
        out = Parsed()
        if len(payload) > self.max_payload_bytes:
            out.drops.append((DropReason.OVERSIZED, f"{len(payload)} bytes > {self.max_payload_bytes}"))
            return out
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            # ValueError covers bad syntax and bad UTF-8; RecursionError comes from "[[[[..." nested past the stack.
            out.drops.append((DropReason.NOT_JSON, str(exc)[:80]))
            return out
        if isinstance(doc, dict) and "readings" in doc:
            items = doc["readings"]
            if len(doc) != 1 or not isinstance(items, list):
                out.drops.append((DropReason.BAD_SCHEMA, 'expected {"readings": [...]} and nothing else'))
                return out
            if len(items) > self.max_readings:
                out.drops.append((DropReason.TOO_MANY_READINGS, f"{len(items)} readings > {self.max_readings}"))
                return out
        else:
            items = [doc]
        for item in items:
            reading = self._reading(item)
            if isinstance(reading, Reading):
                out.readings.append(reading)
            else:
                out.drops.append(reading)
        return out

    def _reading(self, item: Any) -> Reading | tuple[DropReason, str]:
        if not isinstance(item, dict) or set(item) != {"ts", "values"} or not isinstance(item["values"], dict):
            return DropReason.BAD_SCHEMA, 'expected {"ts": <epoch seconds>, "values": {"<channel>": <number>, ...}}'
        ts = _as_float(item["ts"])
        if ts is None or not math.isfinite(ts):
            return DropReason.BAD_SCHEMA, f"ts must be a finite number of epoch seconds, got {item['ts']!r:.40}"
        if self.timestamp_unit == "ms" or (self.timestamp_unit == "auto" and abs(ts) >= MILLISECONDS_FROM):
            ts /= 1000.0
        values: dict[str, Any] = item["values"]
        missing = self._required.difference(values)
        if missing:
            return DropReason.MISSING_CHANNEL, f"missing {sorted(missing)}"
        if not self.allow_unknown_channels and len(values) != len(self.channels):
            return DropReason.UNKNOWN_CHANNEL, f"unknown {sorted(set(values) - self._required)[:5]}"
        row = np.empty(len(self.channels), dtype=np.float64)
        for i, name in enumerate(self.channels):
            value = _as_float(values[name])
            if value is None:
                return DropReason.NOT_NUMBER, f"{name}={values[name]!r:.40}"
            if not abs(value) <= FLOAT32_MAX:  # NaN, infinity, or beyond what the float32 model holds
                return DropReason.NOT_FINITE, f"{name}={values[name]!r:.40} is not a finite float32"
            row[i] = value
        return Reading(ts, row)


def _as_float(value: Any) -> float | None:
    """A JSON number as a float (an integer beyond float range becomes infinity), None for anything else.

    >>> _as_float(3), _as_float(10**400), _as_float(True), _as_float("1")
    (3.0, inf, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


class OrderGuard:
    """Per device: reject repeated, backwards and far-future timestamps, and devices beyond the limit.

    A far-future reading is refused without touching the device's state, so one bad clock reading cannot
    blind the device. A clock that steps back is believed after `reanchor_after` backwards readings in a row:
    the device is re-anchored at the new time (logged once) instead of dropping everything until the old
    time comes round again.
    """

    def __init__(
        self,
        max_devices: int,
        max_future_s: float | None = None,
        reanchor_after: int = 30,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_devices = max_devices
        self.max_future_s = max_future_s
        self.reanchor_after = reanchor_after
        self.clock = clock
        self.reanchored = 0
        self._last: dict[str, float] = {}
        self._backwards: dict[str, int] = {}
        self.monotonic = monotonic
        self._seen: dict[str, float] = {}  # monotonic time of each device's last accepted reading
        self._next_reanchor_log = 0.0
        self._reanchors_unlogged = 0

    @property
    def devices(self) -> int:
        return len(self._last)

    def check(self, device: str, ts: float) -> DropReason | None:
        """None if the reading may be scored (and remember its ts), otherwise why not."""
        if self.max_future_s is not None and ts > self.clock() + self.max_future_s:
            return DropReason.FUTURE_TS
        last = self._last.get(device)
        if last is None:
            if len(self._last) >= self.max_devices:
                return DropReason.TOO_MANY_DEVICES
        elif ts == last:
            return DropReason.DUPLICATE_TS
        elif ts < last:
            behind = self._backwards.get(device, 0) + 1
            if behind < self.reanchor_after:
                self._backwards[device] = behind
                return DropReason.OUT_OF_ORDER
            self.reanchored += 1
            self._log_reanchor(device, behind, last, ts)
        self._backwards.pop(device, None)
        self._last[device] = ts
        self._seen[device] = self.monotonic()
        return None

    def check_block(self, device: str, ts: np.ndarray) -> list[tuple[int, DropReason]]:
        """`check` for each of a message's readings in order: the refused ones' positions and reasons
        ([] when all may be scored). A block in order, after the device's last reading and not in the
        future, the common case, is accepted at once."""
        if len(ts) == 1:
            reason = self.check(device, float(ts[0]))
            return [] if reason is None else [(0, reason)]
        last = self._last.get(device)
        in_order = bool((np.diff(ts) > 0).all())
        if (
            in_order
            and (last is None and len(self._last) < self.max_devices or last is not None and ts[0] > last)
            and (self.max_future_s is None or ts[-1] <= self.clock() + self.max_future_s)
        ):
            self._backwards.pop(device, None)
            self._last[device] = float(ts[-1])
            self._seen[device] = self.monotonic()
            return []
        refused = [(i, self.check(device, t)) for i, t in enumerate(ts.tolist())]
        return [(i, reason) for i, reason in refused if reason is not None]

    def _log_reanchor(self, device: str, behind: int, last: float, ts: float) -> None:
        # A clock that keeps stepping back (a broken RTC, a hostile sender) re-anchors every `reanchor_after`
        # readings: one line, then at most one a minute with the count since, as drops are warned about.
        now = self.monotonic()
        if now < self._next_reanchor_log:
            self._reanchors_unlogged += 1
            return
        self._next_reanchor_log = now + REANCHOR_LOG_INTERVAL_S
        more = (
            f" ({self._reanchors_unlogged} more re-anchors since the last warning)" if self._reanchors_unlogged else ""
        )
        self._reanchors_unlogged = 0
        logger.warning(
            "%s: %d readings in a row were older than %.3f; its clock stepped back, re-anchoring at %.3f%s",
            device, behind, last, ts, more,
        )  # fmt: skip

    def idle(self, idle_s: float) -> list[str]:
        """Devices with no accepted reading for more than `idle_s` seconds."""
        cutoff = self.monotonic() - idle_s
        return [device for device, seen in self._seen.items() if seen < cutoff]

    def forget(self, device: str) -> None:
        """Free the device's slot; a reading from it later starts it afresh."""
        self._last.pop(device, None)
        self._backwards.pop(device, None)
        self._seen.pop(device, None)
