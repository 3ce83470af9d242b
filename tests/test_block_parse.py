"""The array parser takes exactly the readings, and drops exactly what, the per-reading parser does: on
well-formed payloads (which it must take by its fast path) and on every kind of malformed one."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevae.agent.block_parse import _fast, parse_block
from edgevae.agent.readings import ReadingParser, encode_payloads

CHANNELS = ("flow", "pressure", "temp")
PARSERS = [
    ReadingParser(CHANNELS),
    ReadingParser(CHANNELS, timestamp_unit="ms"),
    ReadingParser(CHANNELS, allow_unknown_channels=True),
    ReadingParser(CHANNELS, max_readings=3),
]


def same(parser: ReadingParser, payload: bytes) -> None:
    exact = parser.parse(payload)
    block = parse_block(parser, payload)
    assert block.drops == exact.drops
    assert block.ts.tolist() == [r.ts for r in exact.readings]
    want = np.array([r.values for r in exact.readings]).reshape(-1, len(CHANNELS))
    np.testing.assert_array_equal(block.values, want)
    assert block.values.dtype == np.float64


@pytest.mark.parametrize("per_message", [1, 2, 100])
def test_well_formed_payloads_take_the_fast_path(per_message: int) -> None:
    rng = np.random.default_rng(0)
    rows = 100
    values = rng.normal(0, 1e3, (rows, 3))
    values[::7, 1] = np.round(values[::7, 1])  # integers too
    ts = 1.7e9 + np.arange(rows) * 0.5
    for payload in encode_payloads(ts, values, CHANNELS, per_message):
        assert _fast(PARSERS[0], payload) is not None
        same(PARSERS[0], payload)
    millis = encode_payloads(ts * 1000, values, CHANNELS, per_message)[0]
    block = parse_block(PARSERS[0], millis)  # auto: milliseconds told apart from seconds
    assert block.ts[0] == ts[0]


MALFORMED = [
    b"",
    b"not json",
    b"[1, 2]",
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": true}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": null}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": "3"}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": NaN}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": 1e400}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": 1e39}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": 100000000000000000000000000000000000000000}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": [3]}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": {}}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2}}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": 3, "spare": 4}}',
    b'{"ts": 1, "values": {"flow": 1, "flow": 5, "pressure": 2, "temp": 3}}',
    b'{"ts": 1, "ts": 2, "values": {"flow": 1, "pressure": 2, "temp": 3}}',
    b'{"ts": "1", "values": {"flow": 1, "pressure": 2, "temp": 3}}',
    b'{"ts": true, "values": {"flow": 1, "pressure": 2, "temp": 3}}',
    b'{"ts": 1e400, "values": {"flow": 1, "pressure": 2, "temp": 3}}',
    b'{"ts": 1, "values": [1, 2, 3]}',
    b'{"ts": 1, "values": {"flow": 1, "pressure": 2, "te\\"mp": 3}}',
    b'{"ts": 1, "values": {"fl\\u006fw": 1, "pressure": 2, "temp": 3}}',
    b'{"readings": []}',
    b'{"readings": {}}',
    b'{"readings": [], "extra": 1}',
    b'{"readings": [1, {"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": 3}}]}',
    b'{"readings": [{"ts": 1}, {"ts": 2, "values": {"flow": 1, "pressure": 2, "temp": 3, "x": 1}}]}',
    b'{"readings": [{"ts": 1, "values": {"flow": 1, "pressure": 2, "temp": 3}}] }',
    json.dumps({"readings": [{"ts": i, "values": dict.fromkeys(CHANNELS, 1.0)} for i in range(5)]}).encode(),
    b'{"readings": ' + b"[" * 90 + b"]" * 90 + b"}",
]


@pytest.mark.parametrize("payload", MALFORMED)
@pytest.mark.parametrize("parser", PARSERS, ids=["default", "ms", "ignore-unknown", "max-3"])
def test_malformed_payloads_get_the_exact_parsers_reasons(parser: ReadingParser, payload: bytes) -> None:
    same(parser, payload)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(10**40), max_value=10**40),
)
VALUES = st.one_of(
    NUMBERS, NUMBERS, NUMBERS, st.booleans(), st.none(), st.text(max_size=3), st.lists(NUMBERS, max_size=2)
)
KEYS = st.sampled_from([*CHANNELS, "spare", 'q"uote', "null"])


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    def reading() -> Any:
        keys = draw(st.lists(KEYS, max_size=5)) if draw(st.booleans()) else list(CHANNELS)
        values = {k: draw(VALUES) for k in keys}
        doc: dict[str, Any] = {"ts": draw(st.one_of(NUMBERS, VALUES)), "values": values}
        if draw(st.integers(0, 9)) == 0:
            doc.pop(draw(st.sampled_from(["ts", "values"])))
        return doc

    if draw(st.booleans()):
        doc: Any = reading()
    else:
        doc = {"readings": [reading() for _ in range(draw(st.integers(0, 5)))]}
    return json.dumps(doc, allow_nan=True).encode()


@settings(max_examples=400, deadline=None)
@given(payload=payloads(), which=st.integers(0, len(PARSERS) - 1))
def test_any_payload_gets_the_same_readings_and_drops(payload: bytes, which: int) -> None:
    same(PARSERS[which], payload)
