"""Malformed and hostile sensor messages from a seeded random.Random, each with what the agent must count for it.

Every message is built so that its outcome is known exactly: each bad reading has a single defect, and the
reason the parser checks first is the one expected. Readings the parser accepts are `GUARDED`: whether the
agent scores them or drops them by the device's clock or slot (`duplicate_ts`, `out_of_order`,
`too_many_devices`) depends on timing (slots free up as idle devices are forgotten), so only their sum is exact.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_fixtures import CHANNELS, MEAN, STD

GUARDED = "guarded"
CLOCK_REASONS = ("duplicate_ts", "out_of_order", "too_many_devices")
FLOAT32_MAX = 3.4028234663852886e38
# Python >= 3.11 (and 3.10.7) refuses to turn more than this many digits into an int, with a ValueError.
INT_DIGITS = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
DEVICE_ID_BYTES = 256  # longer device ids are refused as bad_topic (their alert topic would be too long)
UNICODE_IDS = ("датчик-7", "センサー", "pompe-é", "🌡️-1", "خط-٣", "Ω≈ç√")


def json_refuses_nesting(depth: int) -> bool:
    """Whether json.loads, which the agent parses with, gives up on `depth` nested lists (RecursionError)."""
    try:
        json.loads("[" * depth + "]" * depth)
    except RecursionError:
        return True
    return False


_RAW = re.compile(r'"\\u0000raw:(.*?)\\u0000"')


def raw(text: str) -> str:
    """JSON text to be written as is by `dumps`: what a sender may emit and json.dumps would not (1e309, or an
    integer longer than Python prints)."""
    return f"\0raw:{text}\0"


def dumps(obj: Any) -> str:
    """json.dumps (NaN and infinities as the literals NaN and Infinity) with every `raw` text put in place."""
    text = json.dumps(obj, separators=(",", ":"))
    return _RAW.sub(lambda m: m.group(1), text) if "\\u0000raw:" in text else text


@dataclass(frozen=True)
class Hostile:
    kind: str  # the maker's name: random_bytes, truncated, ...
    device: str  # the topic level the agent reads the device id from
    payload: bytes
    expect: Counter[str]  # drop reason -> count, and GUARDED -> readings the parser accepts

    @property
    def touches_clock(self) -> bool:
        """Whether a device's state may change: such messages never go to the stream whose windows are checked."""
        return self.expect[GUARDED] > 0


class HostileMessages:
    """`next()` gives the next hostile message; the same seed gives the same messages."""

    def __init__(
        self,
        rng: random.Random,
        now: float,
        max_payload_bytes: int,
        max_readings: int,
        valid_device: str,
        extreme_devices: tuple[str, ...],
        junk_ids: int,
    ) -> None:
        self.rng = rng
        self.now = now
        self.limit = max_payload_bytes
        self.max_readings = max_readings
        self.valid_device = valid_device
        self.extreme_devices = extreme_devices
        self.junk_ids = junk_ids
        self._extreme_ts = dict.fromkeys(extreme_devices, now - 1e6)
        # Within a tenth of a std of the mean: the scores stay far below the threshold, so junk raises no alert.
        # Drawn once and reused (never changed in place): generating them per reading would dominate the run.
        self._values = [
            {c: round(m + rng.gauss(0.0, 0.1) * sd, 4) for c, m, sd in zip(CHANNELS, MEAN, STD, strict=True)}
            for _ in range(1000)
        ]
        # (weight, maker) of every kind; a maker returns (payload, expected, device or None to pick one).
        self.kinds: list[tuple[float, Callable[[], tuple[bytes, Counter[str], str | None]]]] = [
            (10, self._random_bytes),
            (8, self._truncated),
            (8, self._garbled),
            (6, self._wrong_document),
            (24, self._bad_reading_message),
            (1, self._deep_nesting),
            (1, self._long_string),
            (1, self._many_keys),
            (10, self._mixed_batch),
            (2, self._too_many_readings),
            (1, self._at_the_limit),
            (1, self._just_over_the_limit),
            (0.05, self._far_over_the_limit),
            (4, self._bad_device_id),
            (14, self._good_from_junk_device),
            (3, self._future),
            (2, self._descending_batch),
            (2, self._duplicate_batch),
            (1, self._extreme_values),
            (1, self._empty_batch),
        ]
        self._weights = [w for w, _ in self.kinds]

    def next(self) -> Hostile:
        [(_, make)] = self.rng.choices(self.kinds, self._weights)
        payload, expect, device = make()
        if device is None:
            guarded = expect[GUARDED] > 0
            device = self._junk_device() if guarded or self.rng.random() < 0.7 else self.valid_device
        return Hostile(make.__name__.lstrip("_"), device, payload, expect)

    def _below(self, n: int) -> int:
        """A random index below `n` from exactly one draw: randrange draws a varying number of times for some
        `n`, and the lengths here vary with the clock, which would make the messages differ from run to run."""
        return int(self.rng.random() * n)

    # --- readings ------------------------------------------------------------------------------------------

    def _ts(self) -> float:
        """A past time in epoch seconds or, one time in four, milliseconds (the agent tells them apart)."""
        ts = self.now - self.rng.uniform(10.0, 1e6)
        return round(ts * 1000.0) if self.rng.random() < 0.25 else round(ts, 3)

    def _good(self, ts: float | None = None) -> dict[str, Any]:
        return {"ts": self._ts() if ts is None else ts, "values": self.rng.choice(self._values)}

    def _bad(self, alone: bool = False) -> tuple[dict[str, Any] | Any, str]:
        """A reading with exactly one defect, and the reason it is dropped for; `alone`: the message's only
        reading, so that it may also be one the JSON parser refuses (which would take a batch with it)."""
        good = self._good()
        values: dict[str, Any] = good["values"]
        channel = self.rng.choice(CHANNELS)
        pick = self.rng.randrange(16)
        if pick == 0:
            return self.rng.choice([5, "reading", None, True, [], [good]]), "bad_schema"  # not an object
        if pick == 1:
            return {"ts": good["ts"]}, "bad_schema"  # no values
        if pick == 2:
            return {**good, "extra": 1}, "bad_schema"
        if pick == 3:
            return {"ts": good["ts"], "values": list(values.values())}, "bad_schema"
        if pick == 4:
            bad_ts = self.rng.choice([math.nan, math.inf, raw("1e309"), 10**400, "1700000000"])
            return {**good, "ts": bad_ts}, "bad_schema"  # not a finite number
        if pick == 5:
            return {"ts": good["ts"], "values": {c: v for c, v in values.items() if c != channel}}, "missing_channel"
        if pick == 6:
            return {"ts": good["ts"], "values": {**values, "humidity": 40.0}}, "unknown_channel"
        if pick in (7, 8):
            wrong = self.rng.choice(["20.5", True, False, None, [1.0], {"v": 1.0}, "x" * 200])
            return {"ts": good["ts"], "values": {**values, channel: wrong}}, "not_number"
        if pick in (9, 10, 11):
            # NaN and infinity literals, numbers past float64 (1e309 is read as infinity, 10**400 overflows to it)
            # and numbers past float32, which the model computes in.
            huge = [math.nan, math.inf, -math.inf, raw("1e309"), raw("-1e309"), 10**400, -(10**400), 3.5e38, -1e39]
            return {"ts": good["ts"], "values": {**values, channel: self.rng.choice(huge)}}, "not_finite"
        if pick == 12 and alone and INT_DIGITS:
            # An integer longer than Python turns into an int: the JSON parser itself refuses it.
            return {"ts": good["ts"], "values": {**values, channel: raw("9" * (INT_DIGITS + 1))}}, "not_json"
        if pick == 13:
            nested: Any = 1.0
            for _ in range(self.rng.randrange(2, 200)):  # nested, yet within the parser's recursion limit
                nested = [nested]
            return {"ts": good["ts"], "values": {**values, channel: nested}}, "not_number"
        if pick == 14:
            return {"ts": self.now + self.rng.uniform(1e4, 1e8), "values": values}, "future_ts"
        return {"ts": (self.now + self.rng.uniform(1e4, 1e7)) * 1000.0, "values": values}, "future_ts"  # in ms

    def _message(self, items: list[Any]) -> bytes:
        return dumps(items[0] if len(items) == 1 and self.rng.random() < 0.5 else {"readings": items}).encode()

    # --- kinds of message ----------------------------------------------------------------------------------

    def _random_bytes(self) -> tuple[bytes, Counter[str], str | None]:
        # 0x80 is a UTF-8 continuation byte: no JSON text can start with it, whatever follows.
        return b"\x80" + self.rng.randbytes(self.rng.randrange(0, 2000)), Counter(not_json=1), None

    def _truncated(self) -> tuple[bytes, Counter[str], str | None]:
        # A strict prefix of an object never closes it, so it is never JSON; the empty payload included.
        whole = dumps({"readings": [self._good() for _ in range(self.rng.randrange(1, 20))]}).encode()
        return whole[: self._below(len(whole))], Counter(not_json=1), None

    def _garbled(self) -> tuple[bytes, Counter[str], str | None]:
        whole = dumps(self._good())
        if self.rng.random() < 0.5:
            # Without backslashes every quote pairs with another; dropping one leaves a string unclosed.
            quotes = [i for i, c in enumerate(whole) if c == '"']
            i = quotes[self._below(len(quotes))]
            return (whole[:i] + whole[i + 1 :]).encode(), Counter(not_json=1), None
        raw = bytearray(whole.encode())
        raw[self._below(len(raw))] = 0xFF  # never valid in UTF-8
        return bytes(raw), Counter(not_json=1), None

    def _wrong_document(self) -> tuple[bytes, Counter[str], str | None]:
        doc = self.rng.choice(
            [5, "text", None, True, [], [self._good()], {}, {"readings": 5}]
            + [{"readings": [self._good()], "ts": 1}, {f"k{i}": i for i in range(self.rng.randrange(1, 3000))}]
        )
        return dumps(doc).encode(), Counter(bad_schema=1), None

    def _bad_reading_message(self) -> tuple[bytes, Counter[str], str | None]:
        item, reason = self._bad(alone=True)
        return dumps(item).encode(), Counter({reason: 1}), None

    def _deep_nesting(self) -> tuple[bytes, Counter[str], str | None]:
        # Nested past the parser's recursion limit: a RecursionError inside json, which the agent must catch.
        # Where this Python's json has no such limit, the document parses and is refused for its shape.
        depth = self.rng.randrange(8_000, 10_000)  # 6 bytes a level, within the payload limit
        refused = json_refuses_nesting(depth)
        if self.rng.random() < 0.5:
            return b"[" * depth + b"]" * depth, Counter({"not_json" if refused else "bad_schema": 1}), None
        good = self._good()
        inner = '{"a":' * depth + "1" + "}" * depth
        values = ", ".join(f'"{c}": {inner if c == "temp" else v}' for c, v in good["values"].items())
        payload = f'{{"ts": {good["ts"]}, "values": {{{values}}}}}'.encode()
        return payload, Counter({"not_json" if refused else "not_number": 1}), None

    def _long_string(self) -> tuple[bytes, Counter[str], str | None]:
        good = self._good()
        text = "x" * self.rng.randrange(1000, self.limit // 2)
        if self.rng.random() < 0.5:
            values = {**good["values"], self.rng.choice(CHANNELS): text}
            return dumps({**good, "values": values}).encode(), Counter(not_number=1), None
        values = {**good["values"], text: 1.0}  # a channel name nobody knows
        return dumps({**good, "values": values}).encode(), Counter(unknown_channel=1), None

    def _many_keys(self) -> tuple[bytes, Counter[str], str | None]:
        good = self._good()
        values = {**good["values"], **{f"c{i}": float(i) for i in range(self.rng.randrange(10, 3000))}}
        return dumps({**good, "values": values}).encode(), Counter(unknown_channel=1), None

    def _mixed_batch(self) -> tuple[bytes, Counter[str], str | None]:
        items, expect = [], Counter[str]()
        for _ in range(self.rng.randrange(1, self.max_readings + 1)):
            if self.rng.random() < 0.5:
                items.append(self._good())
                expect[GUARDED] += 1
            else:
                item, reason = self._bad()
                items.append(item)
                expect[reason] += 1
        return dumps({"readings": items}).encode(), expect, None

    def _too_many_readings(self) -> tuple[bytes, Counter[str], str | None]:
        items = [self._good() for _ in range(self.max_readings + self.rng.randrange(1, 50))]
        return dumps({"readings": items}).encode(), Counter(too_many_readings=1), None

    def _padded(self, size: int) -> bytes:
        # JSON allows whitespace after the document: a valid reading of exactly `size` bytes.
        text = dumps(self._good()).encode()
        return text + b" " * (size - len(text))

    def _at_the_limit(self) -> tuple[bytes, Counter[str], str | None]:
        return self._padded(self.limit - self.rng.randrange(0, 64)), Counter({GUARDED: 1}), None

    def _just_over_the_limit(self) -> tuple[bytes, Counter[str], str | None]:
        # Refused by the agent itself: within the packet size it asked the broker for (limit + 4096).
        return self._padded(self.limit + self.rng.randrange(1, 1024)), Counter(oversized=1), None

    def _far_over_the_limit(self) -> tuple[bytes, Counter[str], str | None]:
        # Past the MQTT 5 maximum packet size the agent gave the broker: the broker never sends it.
        return self._padded(2 * self.limit + self.rng.randrange(0, 4096)), Counter(), None

    def _bad_device_id(self) -> tuple[bytes, Counter[str], str | None]:
        long_id = self.rng.choice(["d", "é", "日"]) * (DEVICE_ID_BYTES + self.rng.randrange(1, 500))
        return dumps(self._good()).encode(), Counter(bad_topic=1), self.rng.choice(["", long_id])

    def _good_from_junk_device(self) -> tuple[bytes, Counter[str], str | None]:
        n = self.rng.randrange(1, 10)
        return self._message([self._good() for _ in range(n)]), Counter({GUARDED: n}), None

    def _future(self) -> tuple[bytes, Counter[str], str | None]:
        # Refused before the device's clock is looked at, so it may go to the checked stream too.
        n = self.rng.randrange(1, 10)
        items = [{**self._good(), "ts": self.now + self.rng.uniform(1e4, 1e8)} for _ in range(n)]
        return self._message(items), Counter(future_ts=n), None

    def _descending_batch(self) -> tuple[bytes, Counter[str], str | None]:
        start, n = self.now - self.rng.uniform(1e3, 1e6), self.rng.randrange(2, self.max_readings + 1)
        items = [self._good(round(start - k, 3)) for k in range(n)]
        return self._message(items), Counter({GUARDED: n}), self._junk_device()

    def _duplicate_batch(self) -> tuple[bytes, Counter[str], str | None]:
        ts, n = round(self.now - self.rng.uniform(1e3, 1e6), 3), self.rng.randrange(2, 50)
        return self._message([self._good(ts) for _ in range(n)]), Counter({GUARDED: n}), self._junk_device()

    def _extreme_values(self) -> tuple[bytes, Counter[str], str | None]:
        """Finite float32 values at the edge of the range: the model's score overflows to infinity, and the
        device raises an alert that never ends (such devices are few, and told apart by name)."""
        device = self.rng.choice(self.extreme_devices)
        items = []
        for _ in range(self.rng.randrange(1, 20)):
            self._extreme_ts[device] += 1.0
            values = {c: self.rng.choice([FLOAT32_MAX, -FLOAT32_MAX, 1e38]) for c in CHANNELS}
            items.append({"ts": self._extreme_ts[device], "values": values})
        return self._message(items), Counter({GUARDED: len(items)}), device

    def _empty_batch(self) -> tuple[bytes, Counter[str], str | None]:
        return b'{"readings": []}', Counter(), None

    def _junk_device(self) -> str:
        """Many distinct ids, more than limits.max_devices, plus a few in scripts other than Latin."""
        if self.rng.random() < 0.1:
            return self.rng.choice(UNICODE_IDS)
        return f"junk-{self.rng.randrange(self.junk_ids)}"
