"""A soak of the real agent: a long steady stream from many devices, with faults, at a pace it keeps up with.

Every reading must be counted, every window scored, every alert ended, and memory must stop growing once
the agent has warmed up. `EDGEVAE_FAULTS_SCALE=full` runs 1,000,000 readings; the default, quick, 100,000.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from agent_fixtures import CHANNELS, STD, STRIDE, WINDOW, Names, Publisher, expected_alerts, stream, timestamps
from agent_probe import RunningAgent, mib, publish_all, running_agent, scale, write_figures

from edgevae.agent.readings import encode_payloads
from edgevae.core.window import window_count
from edgevae.demo.broker import Broker

READINGS = {"quick": 100_000, "full": 1_000_000}
DEVICES = 20
PER_MESSAGE = 100  # readings per MQTT message, as a gateway batches them
WARM_UP = 0.1  # share of the readings after which memory is expected to be flat
# Messages sent ahead of what the agent has handled: two chunks, far below limits.queue_size (10,000 by
# default), so a slow moment of the agent costs nothing. A chunk is 10 % of a quick run's readings, so that the
# end of warm-up is seen where it is; stats come often enough that the agent is never left waiting.
ROUNDS_PER_CHUNK = 5  # a message from every device per round: 100 messages, 10,000 readings
STATS_INTERVAL_S = 0.05
FAULT_EVERY = 2_500  # rows of a device's stream between the starts of two of its faults
FAULT_ROWS = 40
# Measured on two cores, from the end of warm-up to the end: -1.3 to +1.5 MiB over quick runs, +1.1 to +1.4 MiB
# over full ones (allocator and ONNX Runtime arenas settling). Ten times that and more: a window's array kept
# per window scored (about 200 bytes) would add 5 MiB to a quick run and 50 MiB to a full one, so the full run
# catches a leak of that size and the quick one only a leak several times larger.
RSS_GROWTH_MIB = {"quick": 10, "full": 20}


def faulty_stream(rows: int, device: int) -> np.ndarray:
    """The device's readings with 3 std added to one channel over FAULT_ROWS rows every FAULT_EVERY rows,
    at an offset of its own so that alerts open and end all through the soak."""
    values = stream(rows, phase=0.3 * device)
    channel = device % len(CHANNELS)
    offset = (device * FAULT_EVERY) // DEVICES + FAULT_EVERY // 4
    for start in range(offset, rows - FAULT_ROWS, FAULT_EVERY):
        values[start : start + FAULT_ROWS, channel] += 3.0 * STD[channel]
    return values


def test_soak(tmp_path: Path, broker: Broker, bundle: Path, names: Names, publisher: Publisher) -> None:
    run_scale = scale()
    total = READINGS[run_scale]
    rows = total // DEVICES
    devices = [f"soak-{d:02d}" for d in range(DEVICES)]
    streams = [faulty_stream(rows, d) for d in range(DEVICES)]
    ts = timestamps(rows)
    assert rows % (PER_MESSAGE * ROUNDS_PER_CHUNK) == 0

    def chunks() -> Iterator[list[tuple[str, bytes]]]:
        """ROUNDS_PER_CHUNK messages from every device at a time, encoded as they are sent."""
        for first in range(0, rows, PER_MESSAGE * ROUNDS_PER_CHUNK):
            chunk = []
            for start in range(first, first + PER_MESSAGE * ROUNDS_PER_CHUNK, PER_MESSAGE):
                part = slice(start, start + PER_MESSAGE)
                for device, values in zip(devices, streams, strict=True):
                    payload = encode_payloads(ts[part], values[part], CHANNELS, PER_MESSAGE)[0]
                    chunk.append((names.data(device), payload))
            yield chunk

    expected = {device: expected_alerts(values) for device, values in zip(devices, streams, strict=True)}
    windows = DEVICES * window_count(rows, WINDOW, STRIDE)
    with running_agent(tmp_path, broker, bundle, names, stats={"interval_s": STATS_INTERVAL_S}) as agent:
        t0 = time.monotonic()
        warm_kib, warm_readings = _feed(agent, publisher, chunks(), WARM_UP * total)
        final = agent.wait_stats(
            lambda s: s["readings"] >= total and s["windows_scored"] >= windows, 120, "every reading scored"
        )
        seconds = time.monotonic() - t0
        end_kib = _rss_now(agent)
        alerts = agent.collector.wait_for(lambda ms: _alerts_ended(ms, names, expected), 30, "every alert and its end")
        assert agent.alive()
        assert agent.stop() == 0

    log = agent.log_text()
    growth_kib = end_kib - warm_kib
    figures = {
        "scale": run_scale,
        "devices": DEVICES,
        "readings": total,
        "messages": total // PER_MESSAGE,
        "seconds": round(seconds, 2),
        "readings_per_s": round(total / seconds),
        "windows_scored": final["windows_scored"],
        "alerts": final["alerts"],
        "rss_start_mib": mib(agent.online_kib),
        "rss_warm_mib": mib(warm_kib),
        "rss_warm_at_readings": warm_readings,
        "rss_peak_mib": mib(agent.rss.peak_kib),
        "rss_end_mib": mib(end_kib),
        "rss_growth_mib": mib(growth_kib),
        "rss_series_mib": [(t, mib(kib)) for t, kib in agent.rss.series()[:: max(1, len(agent.rss.samples) // 50)]],
    }
    write_figures(f"soak-{run_scale}", figures)

    assert "Traceback" not in log
    assert final["readings"] == total
    assert final["dropped"] == dict.fromkeys(final["dropped"], 0), final["dropped"]
    assert final["windows_scored"] == windows
    assert final["scoring_errors"] == 0
    opened = sum(kind == "alert" for events in expected.values() for kind, _ in events)
    assert opened > DEVICES  # the faults did raise alerts all through the run
    assert final["alerts"] == opened
    assert final["alerts_open"] == 0
    for device in devices:
        # Each alert and end on the window the reference decides, so no reading of the device went missing.
        got = [(a["type"], a["window_end"]) for a in alerts[device]]
        assert got == [(kind, ts[k * STRIDE + WINDOW - 1]) for kind, k in expected[device]], device
    bound = RSS_GROWTH_MIB[run_scale]
    assert growth_kib < bound * 1024, f"RSS grew by {mib(growth_kib)} MiB after warm-up (bound {bound} MiB)"


def _feed(
    agent: RunningAgent, publisher: Publisher, chunks: Iterator[list[tuple[str, bytes]]], warm_up: float
) -> tuple[int, int]:
    """Publish chunk after chunk, never more than two ahead of what the agent has handled; returns its RSS
    (KiB) when it had first handled `warm_up` readings, and how many it had handled then."""
    warm: tuple[int, int] | None = None
    counted_after: list[int] = []  # the agent's readings once it has handled each chunk
    for chunk in chunks:
        if len(counted_after) >= 2:
            n = counted_after[-2]
            seen = agent.wait_stats(_readings_at_least(n), 60, f"{n} readings handled")
            if warm is None and seen["readings"] >= warm_up:
                warm = _rss_now(agent), seen["readings"]
        publish_all(publisher, chunk)
        counted_after.append((counted_after[-1] if counted_after else 0) + len(chunk) * PER_MESSAGE)
    if warm is None:  # so few chunks that none was waited for
        warm = _rss_now(agent), agent.fresh_stats()["readings"]
    return warm


def _readings_at_least(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda stats: int(stats["readings"]) >= n


def _rss_now(agent: RunningAgent) -> int:
    sample = agent.rss.sample()
    assert sample is not None, f"the agent exited with code {agent.proc.poll()}"
    return sample.rss_kib


def _alerts_ended(
    messages: list[Any], names: Names, expected: dict[str, list[tuple[str, int]]]
) -> dict[str, list[dict[str, Any]]] | None:
    """Every device's alert messages once it has as many as expected, checking that each alert's end carries
    its id; None until then."""
    by_device: dict[str, list[dict[str, Any]]] = {device: [] for device in expected}
    topics = {names.alert(device): device for device in expected}
    for m in messages:
        if m.topic in topics:
            by_device[topics[m.topic]].append(m.json())
    if any(len(by_device[device]) < len(events) for device, events in expected.items()):
        return None
    for device, got in by_device.items():
        opened = [a["id"] for a in got if a["type"] == "alert"]
        ended = [a["id"] for a in got if a["type"] == "end"]
        assert opened == ended, f"{device}: an alert without its end, or an end without its alert"
    return by_device
