"""Parsing and validating sensor messages: every bad input is dropped with its reason, nothing raises."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevae.agent.readings import DeviceTopics, DropReason, OrderGuard, ReadingParser, encode_payloads
from edgevae.agent.stats import DropLog

CHANNELS = ("a", "b")
GOOD = {"ts": 10.0, "values": {"a": 1.0, "b": 2}}


def parse(payload: bytes | str | object, **kwargs: object) -> tuple[list[tuple[float, list[float]]], list[str]]:
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    raw = payload.encode() if isinstance(payload, str) else payload
    parsed = ReadingParser(CHANNELS, max_payload_bytes=10_000, max_readings=3, **kwargs).parse(raw)  # type: ignore[arg-type]
    return [(r.ts, r.values.tolist()) for r in parsed.readings], [reason.value for reason, _ in parsed.drops]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * 10_001, "oversized"),  # over max_payload_bytes, rejected before parsing
        (b"{not json", "not_json"),  # syntax error
        (b"\xff\xfe\x00garbage", "not_json"),  # not UTF-8
        (b"[" * 9_000, "not_json"),  # nested past the parser's recursion limit
        ("", "not_json"),  # empty message
        ([1, 2], "bad_schema"),  # not an object
        ({"ts": 1.0}, "bad_schema"),  # no values
        ({"ts": 1.0, "values": [1, 2]}, "bad_schema"),  # values not an object
        ({"ts": 1.0, "values": {"a": 1, "b": 2}, "x": 1}, "bad_schema"),  # extra top-level key
        ({"ts": "2024-01-01", "values": {"a": 1, "b": 2}}, "bad_schema"),  # ts must be epoch seconds
        ({"ts": True, "values": {"a": 1, "b": 2}}, "bad_schema"),  # a bool is not a time
        ('{"ts": NaN, "values": {"a": 1, "b": 2}}', "bad_schema"),  # ts not finite
        ({"readings": {"ts": 1}}, "bad_schema"),  # readings must be a list
        ({"readings": [], "extra": 1}, "bad_schema"),  # nothing beside readings
        ({"ts": 1.0, "values": {"a": 1}}, "missing_channel"),  # b absent
        ({"ts": 1.0, "values": {"a": 1, "b": 2, "c": 3}}, "unknown_channel"),  # c is not a model channel
        ('{"ts": 1.0, "values": {"a": NaN, "b": 2}}', "not_finite"),  # NaN token
        ('{"ts": 1.0, "values": {"a": Infinity, "b": 2}}', "not_finite"),  # infinity token
        ('{"ts": 1.0, "values": {"a": 1e400, "b": 2}}', "not_finite"),  # overflows to infinity
        ({"ts": 1.0, "values": {"a": 10**400, "b": 2}}, "not_finite"),  # an integer beyond float range
        ({"ts": 1.0, "values": {"a": "1.5", "b": 2}}, "not_number"),  # numbers as strings are not numbers
        ({"ts": 1.0, "values": {"a": True, "b": 2}}, "not_number"),  # bools are not numbers
        ({"ts": 1.0, "values": {"a": None, "b": 2}}, "not_number"),  # null
        ({"readings": [GOOD] * 4}, "too_many_readings"),  # over max_readings
        ({"ts": 10**309, "values": {"a": 1, "b": 2}}, "bad_schema"),  # an integer time beyond float range
        ({"ts": -(10**309), "values": {"a": 1, "b": 2}}, "bad_schema"),  # and below it
        ({"ts": 1.0, "values": {"a": 1e39, "b": 2}}, "not_finite"),  # finite in float64, inf in the float32 model
        ({"ts": 1.0, "values": {"a": -3.5e38, "b": 2}}, "not_finite"),  # just past float32's lowest
    ],
)
def test_bad_payloads_are_dropped_with_their_reason(payload: object, reason: str) -> None:
    readings, drops = parse(payload)
    assert readings == []
    assert drops == [reason]


def test_single_and_batched_readings() -> None:
    assert parse(GOOD) == ([(10.0, [1.0, 2.0])], [])
    second = {"ts": 11, "values": {"b": 4, "a": 3}}  # channel order in the message does not matter
    assert parse({"readings": [GOOD, second]}) == ([(10.0, [1.0, 2.0]), (11.0, [3.0, 4.0])], [])


def test_bad_readings_in_a_batch_do_not_drop_the_good_ones() -> None:
    bad = {"ts": 11, "values": {"a": "x", "b": 1}}
    readings, drops = parse({"readings": [GOOD, bad, {"ts": 12, "values": {"a": 0, "b": 0}}]})
    assert [ts for ts, _ in readings] == [10.0, 12.0]
    assert drops == ["not_number"]


def test_unknown_channels_can_be_ignored() -> None:
    readings, drops = parse({"ts": 1, "values": {"a": 1, "b": 2, "c": 3}}, allow_unknown_channels=True)
    assert readings == [(1.0, [1.0, 2.0])]
    assert drops == []


def test_values_follow_the_model_channel_order() -> None:
    parsed = ReadingParser(("z", "y")).parse(b'{"ts": 1, "values": {"y": 1, "z": 2}}')
    np.testing.assert_array_equal(parsed.readings[0].values, [2.0, 1.0])


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ([1, 2, 3], [None, None, None]),  # increasing
        ([1, 1], [None, "duplicate_ts"]),  # same timestamp twice
        ([2, 1, 3], [None, "out_of_order", None]),  # a late reading is dropped, the stream goes on
        ([5, 4, 5, 6], [None, "out_of_order", "duplicate_ts", None]),  # compared with the last accepted one
    ],
)
def test_order_guard(sequence: list[float], expected: list[str | None]) -> None:
    guard = OrderGuard(max_devices=10)
    got = [guard.check("d", ts) for ts in sequence]
    assert [r.value if r else None for r in got] == expected


def test_order_is_per_device_and_devices_are_bounded() -> None:
    guard = OrderGuard(max_devices=2)
    assert guard.check("a", 5) is None
    assert guard.check("b", 1) is None  # another device may be behind "a"
    assert guard.check("c", 9) is DropReason.TOO_MANY_DEVICES
    assert guard.check("a", 6) is None  # known devices still flow
    assert guard.devices == 2


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("sensors/pump1/data", "pump1"),  # the + level
        ("site/north/pump2/v1", "pump2"),  # second filter
        ("sensors/pump1/other", None),  # a level differs
        ("sensors/pump1/data/x", None),  # too deep
        ("sensors//data", None),  # an empty device id
        ("", None),  # a topic that could not be decoded
    ],
)
def test_device_from_topic(topic: str, device: str | None) -> None:
    topics = DeviceTopics(["sensors/+/data", "site/north/+/v1"])
    assert topics.device(topic) == device


@pytest.mark.parametrize(
    ("rows", "per_message", "messages", "shape"),
    [
        (5, 1, 5, "reading"),  # one bare reading per message
        (5, 2, 3, "batch"),  # the last message holds the odd reading
        (3, 3, 1, "batch"),  # exactly one full batch
        (2, 10, 1, "batch"),  # fewer readings than a batch
        (0, 4, 0, None),  # nothing to send
    ],
)
def test_encoded_payloads_parse_back(rows: int, per_message: int, messages: int, shape: str | None) -> None:
    ts = 10.0 + 0.5 * np.arange(rows)
    values = np.arange(2.0 * rows).reshape(rows, 2) - 1.5
    payloads = encode_payloads(ts, values, CHANNELS, per_message)
    assert len(payloads) == messages
    if payloads:
        assert ("readings" in json.loads(payloads[0])) == (shape == "batch")
    parser = ReadingParser(CHANNELS, max_readings=max(per_message, 1))
    readings = [r for p in payloads for r in parser.parse(p).readings]
    assert [r.ts for r in readings] == ts.tolist()
    assert [r.values.tolist() for r in readings] == values.tolist()


def test_drop_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = DropLog(interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="edgevae.agent.stats"):
        for _ in range(5):
            log.drop(DropReason.NOT_JSON, "d1", "bad")
        log.drop(DropReason.OVERSIZED, "d1", "big")  # another reason has its own budget
        now[0] = 11.0
        log.drop(DropReason.NOT_JSON, "d1", "bad")
    assert log.counts["not_json"] == 6
    assert log.counts["oversized"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "dropped not_json from d1: bad",
        "dropped oversized from d1: big",
        "dropped not_json from d1: bad (and 4 more since the last warning)",
    ]


def test_one_bad_reading_does_not_cost_the_batch_its_good_ones() -> None:
    batch = {"readings": [GOOD, {"ts": 10**309, "values": {"a": 1, "b": 2}}, {**GOOD, "ts": 11.0}]}
    readings, drops = parse(batch)
    assert readings == [(10.0, [1.0, 2.0]), (11.0, [1.0, 2.0])]
    assert drops == ["bad_schema"]


def test_float32_extremes_are_readings() -> None:
    big = float(np.finfo(np.float32).max)
    readings, drops = parse({"ts": 1.0, "values": {"a": big, "b": -big}})
    assert (readings, drops) == ([(1.0, [big, -big])], [])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
NUMBER = st.integers() | st.floats() | st.sampled_from([10**309, -(10**309), 1e39, float("nan")])
READING = st.fixed_dictionaries(
    {"ts": NUMBER | JSON, "values": st.dictionaries(st.sampled_from(["a", "b", "c"]), NUMBER | JSON)}
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(JSON, READING, st.fixed_dictionaries({"readings": st.lists(READING | JSON, max_size=4)})))
def test_any_json_is_parsed_or_dropped_never_raised(doc: object) -> None:
    parsed = ReadingParser(CHANNELS, max_readings=3).parse(json.dumps(doc).encode())
    for r in parsed.readings:
        assert np.isfinite(r.ts)
        assert np.all(np.abs(r.values) <= np.finfo(np.float32).max)
    assert all(isinstance(reason, DropReason) for reason, _ in parsed.drops)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_parsed_or_dropped_never_raised(payload: bytes) -> None:
    ReadingParser(CHANNELS).parse(payload)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        # one reading far in the future is refused and leaves the device's order alone
        ([100.0, 9.9e15, 101.0, 102.0], [None, "future_ts", None, None]),
        # up to 5 minutes ahead of the agent's clock is accepted (sensor clocks drift)
        ([100.0, 5000.0 + 299.0], [None, None]),
        # a clock stepping back an hour: 2 backwards readings are dropped, the third re-anchors the device
        ([3600.0, 3601.0, 1.0, 2.0, 3.0, 4.0], [None, None, "out_of_order", "out_of_order", None, None]),
        # a single backwards reading between good ones is just out of order, and the count starts again
        ([10.0, 5.0, 11.0, 6.0, 7.0, 12.0], [None, "out_of_order", None, "out_of_order", "out_of_order", None]),
        ([10.0, 10.0], [None, "duplicate_ts"]),
    ],
)
def test_order_guard_with_clocks_gone_wrong(stamps: list[float], expected: list[str | None]) -> None:
    guard = OrderGuard(max_devices=5, max_future_s=300.0, reanchor_after=3, clock=FakeClock(5000.0))
    got = [guard.check("d", ts) for ts in stamps]
    assert [None if r is None else r.value for r in got] == expected


def test_order_guard_counts_reanchors() -> None:
    guard = OrderGuard(max_devices=1, reanchor_after=2)
    assert [guard.check("d", ts) for ts in (10.0, 1.0, 2.0)] == [None, DropReason.OUT_OF_ORDER, None]
    assert guard.reanchored == 1


@pytest.mark.parametrize(
    ("unit", "ts", "seconds"),
    [
        ("auto", 1_700_000_000.5, 1_700_000_000.5),  # epoch seconds
        ("auto", 1_700_000_000_500, 1_700_000_000.5),  # epoch milliseconds
        ("s", 1_700_000_000_500, 1_700_000_000_500.0),  # told: seconds, whatever the size
        ("ms", 1_700_000_000_500, 1_700_000_000.5),
        ("ms", 86_400_000, 86_400.0),  # a small millisecond time is still milliseconds when told so
    ],
)
def test_timestamp_units(unit: str, ts: float, seconds: float) -> None:
    parsed = ReadingParser(CHANNELS, timestamp_unit=unit).parse(
        json.dumps({"ts": ts, "values": {"a": 1, "b": 2}}).encode()
    )
    assert [r.ts for r in parsed.readings] == [pytest.approx(seconds)]


def test_idle_devices_are_found_and_forgotten() -> None:
    mono = FakeClock(0.0)
    guard = OrderGuard(max_devices=2, monotonic=mono)
    assert guard.check("a", 1.0) is None
    mono.now = 50.0
    assert guard.check("b", 1.0) is None
    assert guard.check("c", 1.0) == DropReason.TOO_MANY_DEVICES  # both slots taken
    mono.now = 100.0
    assert guard.idle(60.0) == ["a"]
    guard.forget("a")
    assert guard.check("c", 1.0) is None  # the freed slot goes to a new device
    assert guard.check("a", 0.5) == DropReason.TOO_MANY_DEVICES  # "a" starts afresh, with no slot left


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.sampled_from([1.0, 1.0, 1.0, 0.0, -1.0, -50.0, 1000.0]), min_size=1, max_size=40),
    cut=st.lists(st.integers(1, 8), min_size=1, max_size=10),
    devices=st.integers(1, 3),
)
def test_a_block_is_ordered_as_its_readings_one_by_one(steps: list[float], cut: list[int], devices: int) -> None:
    def guard() -> OrderGuard:
        return OrderGuard(max_devices=2, max_future_s=500.0, reanchor_after=3, clock=lambda: 1000.0)

    one, many = guard(), guard()
    ts = np.cumsum(steps) + 100.0
    for d in range(devices):
        device = f"d{d}"
        want = [(i, r) for i, r in enumerate(one.check(device, float(t)) for t in ts) if r is not None]
        got, start, k = [], 0, 0
        while start < len(ts):
            n = cut[k % len(cut)]
            got += [(start + i, r) for i, r in many.check_block(device, ts[start : start + n])]
            start, k = start + n, k + 1
        assert got == want
    assert many.devices == one.devices
    assert many.reanchored == one.reanchored
