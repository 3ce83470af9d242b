"""A bounded fuzz of the real agent over a real broker: hostile messages interleaved with a valid stream.

The agent must neither die nor log a traceback, must count every hostile message under the reason it was
built for, must score the valid stream as if nothing else arrived, and must keep its log and memory bounded.
`EDGEVAE_FAULTS_SCALE=full` sends 200,000 hostile messages; the default, quick, 20,000.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from agent_fixtures import (
    CHANNELS,
    STRIDE,
    WINDOW,
    Names,
    Publisher,
    batched_payloads,
    expected_alerts,
    stream,
    timestamps,
)
from agent_probe import RunningAgent, mib, publish_all, running_agent, scale, write_figures
from hostile import CLOCK_REASONS, GUARDED, HostileMessages

from edgevae.agent.readings import encode_payloads
from edgevae.core.window import window_count
from edgevae.demo.broker import Broker

MESSAGES = {"quick": 20_000, "full": 200_000}
SEED = 20_240_601
VALID = "fuzz-valid"  # the device whose windows and alerts are checked exactly
EXTREME = ("extreme-0", "extreme-1", "extreme-2")  # devices sending values at the edge of float32
VALID_EVERY = 10  # one reading of the valid stream after every this many hostile messages
CHUNK = 500  # hostile messages published between two looks at the agent's stats
MAX_PAYLOAD_BYTES = 65_536
MAX_READINGS = 100
MAX_DEVICES = 64  # far fewer than the junk ids, so slots run out and idle devices must be forgotten
# Small, so that junk devices are forgotten during the run; the valid device sends every few milliseconds and
# the publisher never pauses for more than a stats interval or two, far below this.
DEVICE_IDLE_S = 2.0
LIMITS = {
    "max_payload_bytes": MAX_PAYLOAD_BYTES,
    "max_readings_per_message": MAX_READINGS,
    "max_devices": MAX_DEVICES,
    "device_idle_s": DEVICE_IDLE_S,
}
JUNK_IDS = 5_000
# Drop warnings are at most one per reason per log.drop_warning_interval_s (60 s), forgetting idle devices
# at most one line a second, and the valid stream and the extreme devices open a handful of alerts.
LOG_LINES = 500
# Measured on two cores: the agent holds 79 MiB once online (Python, numpy, ONNX Runtime and the model) and
# peaks at 82-83 MiB in quick and full runs alike: 64 KiB payloads, refused before they are queued, and a
# device table bounded by max_devices add little. Twice that leaves room for allocator noise and still
# catches a queue or a table that grows with the input.
RSS_CEILING_MIB = 170
REANCHOR = "its clock stepped back, re-anchoring"


def accounted(stats: dict[str, Any]) -> int:
    """Readings scored plus readings and messages dropped: each hostile message adds what it was built to."""
    return int(stats["readings"]) + int(sum(stats["dropped"].values()))


def _accounted_at_least(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda stats: accounted(stats) >= n


def test_fuzz_mqtt(tmp_path: Path, broker: Broker, bundle: Path, names: Names, publisher: Publisher) -> None:
    run_scale = scale()
    total = MESSAGES[run_scale]
    rows = total // VALID_EVERY
    values = stream(rows, fault=("flow", rows // 2, rows // 2 + 40))
    ts = timestamps(rows)
    valid = batched_payloads(values, per_message=1)
    events = expected_alerts(values)
    hostile = HostileMessages(
        random.Random(SEED), time.time(), MAX_PAYLOAD_BYTES, MAX_READINGS, VALID, EXTREME, JUNK_IDS
    )
    with running_agent(tmp_path, broker, bundle, names, limits=LIMITS) as agent:
        t0 = time.monotonic()
        expect, kinds = _send(agent, publisher, hostile, valid, total)
        final = agent.wait_stats(lambda s: accounted(s) >= sum(expect.values()), 120, "every message counted")
        seconds = time.monotonic() - t0
        alerts = agent.collector.wait_for(
            lambda ms: _valid_alerts(ms, names, len(events)), 30, "the valid device's alerts"
        )
        all_stats = agent.all_stats()
        cpu_s = agent.cpu_s()
        assert agent.alive()
        assert agent.stop() == 0

    log = agent.log_text()
    figures = _figures(run_scale, total, seconds, final, agent, log)
    figures.update(seed=SEED, agent_cpu_s=round(cpu_s, 2), kinds=dict(kinds))
    write_figures(f"fuzz-{run_scale}", figures)

    assert "Traceback" not in log
    assert final["scoring_errors"] == 0
    exact = {reason: n for reason, n in final["dropped"].items() if reason not in CLOCK_REASONS}
    assert exact == {reason: expect[reason] for reason in exact}, "drops by reason, as the messages were built"
    clock = sum(final["dropped"][reason] for reason in CLOCK_REASONS)
    assert final["readings"] + clock == expect[GUARDED]
    # The valid stream was scored as if it had been alone: each alert and its end on the reference's window.
    assert final["windows_scored"] >= window_count(rows, WINDOW, STRIDE)
    got = [(a["type"], a["window_start"], a["window_end"]) for a in alerts]
    want = [(kind, ts[k * STRIDE], ts[k * STRIDE + WINDOW - 1]) for kind, k in events]
    assert got == want
    assert [a["id"] for a in alerts if a["type"] == "alert"] == [a["id"] for a in alerts if a["type"] == "end"]
    published = [m for m in agent.collector.messages if m.topic.endswith("/alert")]
    assert {m.topic.split("/")[-2] for m in published} <= {VALID, *EXTREME}, "junk near the mean raised an alert"
    # An extreme device's score overflows to infinity; JSON has none, so the agent says the largest float.
    assert all(math.isfinite(m.json()["score"]) for m in published)
    assert max(s["devices"] for s in all_stats) <= MAX_DEVICES
    assert final["dropped"]["too_many_devices"] > 0
    assert "forgot" in log, "no idle device was forgotten"
    assert figures["log_lines"] < LOG_LINES, "the log is not rate-limited"
    assert agent.rss.peak_kib < RSS_CEILING_MIB * 1024


def _send(
    agent: RunningAgent, publisher: Publisher, hostile: HostileMessages, valid: list[bytes], total: int
) -> tuple[Counter[str], Counter[str]]:
    """Publish `total` hostile messages with the valid stream's readings spread evenly among them, at a pace
    the agent keeps up with; returns what the agent must count (the valid readings under GUARDED) and the
    number of messages of each kind."""
    names = agent.names
    expect = Counter({GUARDED: 1})
    kinds: Counter[str] = Counter()
    # The valid device takes its slot before the junk fills the table.
    publisher.send(names.data(VALID), valid[0])
    sent_valid = 1
    counted_after: list[int] = []  # what the agent has counted once it has handled each chunk
    for first in range(0, total, CHUNK):
        messages: list[tuple[str, bytes]] = []
        for i in range(first, min(first + CHUNK, total)):
            h = hostile.next()
            messages.append((names.data(h.device), h.payload))
            expect += h.expect
            kinds[h.kind] += 1
            if (i + 1) % VALID_EVERY == 0 and sent_valid < len(valid):
                messages.append((names.data(VALID), valid[sent_valid]))
                expect[GUARDED] += 1
                sent_valid += 1
        if len(counted_after) >= 2:
            # Never more than two chunks ahead of the agent, far below its queue of 10,000 messages.
            n = counted_after[-2]
            agent.wait_stats(_accounted_at_least(n), 60, f"{n} readings and drops counted")
        publish_all(publisher, messages)
        counted_after.append(sum(expect.values()))
    assert sent_valid == len(valid)
    return expect, kinds


def _valid_alerts(messages: list[Any], names: Names, expected: int) -> list[dict[str, Any]] | None:
    got = [m.json() for m in messages if m.topic == names.alert(VALID)]
    return got if len(got) >= expected else None


def _figures(
    run_scale: str, total: int, seconds: float, final: dict[str, Any], agent: RunningAgent, log: str
) -> dict[str, Any]:
    return {
        "scale": run_scale,
        "messages": total,
        "seconds": round(seconds, 2),
        "messages_per_s": round(total / seconds),
        "crashes": 0 if agent.proc.returncode == 0 else 1,
        "tracebacks": log.count("Traceback"),
        "log_lines": len(log.splitlines()),
        "reanchor_lines": log.count(REANCHOR),
        "rss_start_mib": mib(agent.online_kib),
        "rss_peak_mib": mib(agent.rss.peak_kib),
        "rss_end_mib": mib(agent.rss.end_kib),
        "readings": final["readings"],
        "windows_scored": final["windows_scored"],
        "alerts": final["alerts"],
        "dropped": {reason: n for reason, n in final["dropped"].items() if n},
    }


def test_a_clock_that_keeps_stepping_back_does_not_flood_the_log(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, publisher: Publisher
) -> None:
    """Drops are warned about at most once per reason a minute; a device re-anchored over and over (a broken
    clock, or a hostile sender) must not write more than a drop reason may."""
    rows, per_message = 30_000, 100
    ts = time.time() - 1e6 - np.arange(rows, dtype=np.float64)  # each reading a second before the last
    payloads = encode_payloads(ts, stream(rows), CHANNELS, per_message)
    with running_agent(tmp_path, broker, bundle, names) as agent:
        publish_all(publisher, [(names.data("backwards"), p) for p in payloads])
        agent.wait_stats(lambda s: accounted(s) >= rows, 60, "every reading counted")
        assert agent.stop() == 0
    lines = agent.log_text().count(REANCHOR)
    assert lines <= 10, f"{lines} re-anchoring warnings for one device's {rows} readings"
