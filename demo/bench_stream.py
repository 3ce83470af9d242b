"""Throughput of the agent against the transport's ceiling, on the same broker and the same messages.

Each consumer (the bare paho subscriber, then the agent) is subscribed, then stopped with SIGSTOP while the
publisher hands every message to the broker, which queues them for the stopped consumer's session; SIGCONT
starts the clock. The consumer then reads as fast as it can, whatever the publisher's own speed, and both
consumers get exactly the same bytes in the same order.

The agent runs as a child process with the product's defaults (only the bundle, topics, state directory
and a short stats interval are set); its progress and drops come from its own retained stats, its CPU
time and peak RSS from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgevae.agent.readings import encode_payloads
from edgevae.agent.topics import Topics
from edgevae.demo.bench_child import save_messages
from edgevae.demo.broker import Broker
from edgevae.training.simulate import simulate_plant

TOPIC_ROOT = "bench"
PREFIX = "edgevae-bench"
STATS_INTERVAL_S = 0.1  # resolution of the agent's end time
STALL_S = 15.0  # no progress for this long: the run is over, whatever is missing was lost


@dataclass(frozen=True)
class Messages:
    path: Path
    count: int
    readings: int
    per_message: int


def prepare_messages(
    workdir: Path, rows: int, devices: int, per_message: int, seed: int = 0, channels: tuple[str, ...] | None = None
) -> Messages:
    """`rows` readings of the simulated plant per device, `per_message` to a message, devices interleaved."""
    per_device: list[list[bytes]] = []
    for d in range(devices):
        table = simulate_plant(rows, seed=seed + d)
        values = table.values if channels is None else table.values[:, [table.channels.index(c) for c in channels]]
        per_device.append(encode_payloads(table.timestamps, values, channels or table.channels, per_message))
    topics, payloads = [], []
    for i in range(max(len(p) for p in per_device)):
        for d, messages in enumerate(per_device):
            if i < len(messages):
                topics.append(f"{TOPIC_ROOT}/pump-{d}/data")
                payloads.append(messages[i])
    path = workdir / f"messages-{rows}x{devices}-{per_message}.npz"
    save_messages(path, topics, payloads)
    return Messages(path, len(payloads), rows * devices, per_message)


def run_publisher(broker: Broker, messages: Messages, rate: float = 0.0, sent: Path | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "edgevae.demo.bench_child", "publish", "--host", broker.host,
               "--port", str(broker.port), "--messages", str(messages.path), "--rate", str(rate)]  # fmt: skip
    if sent is not None:
        command += ["--sent", str(sent)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        msg = f"the publisher failed ({done.returncode}): {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ceiling(broker: Broker, messages: Messages, protocol: str = "5", client: str = "paho") -> dict[str, Any]:
    """The bare subscriber's readings/s on these messages, and its CPU per reading."""
    command = [sys.executable, "-m", "edgevae.demo.bench_child", "subscribe", "--host", broker.host,
               "--port", str(broker.port), "--filter", f"{TOPIC_ROOT}/+/data",
               "--expect", str(messages.count), "--protocol", protocol, "--client", client]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        json.loads(child.stdout.readline())  # ready: subscribed
        child.send_signal(signal.SIGSTOP)
        run_publisher(broker, messages)
        time.sleep(0.2)
        started = time.time()
        child.send_signal(signal.SIGCONT)
        out, _ = child.communicate(timeout=900)
    result = json.loads(out.strip().splitlines()[-1])
    seconds = result["last"] - started
    complete = result["messages"] == messages.count
    return {
        "readings_per_s": messages.readings / seconds if complete else 0.0,
        "seconds": seconds,
        "cpu_us_per_reading": 1e6 * result["cpu_s"] / messages.readings,
        "received": result["messages"] * messages.per_message,
    }


class AgentWatch:
    """The agent's availability, stats and health, as they arrive."""

    def __init__(self, broker: Broker, agent_id: str) -> None:
        self.topics = Topics(PREFIX, agent_id)
        self.online = threading.Event()
        self.health = threading.Event()
        self.stats: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        watched = [(self.topics.availability, 1), (self.topics.agent_topic("stats"), 0),
                   (self.topics.agent_topic("health"), 0)]  # fmt: skip
        self.client.on_connect = lambda c, *_: c.subscribe(watched)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.availability:
            if msg.payload == b"online":
                self.online.set()
        elif msg.topic.endswith("/health"):
            self.health.set()
        elif msg.payload:
            with self._lock:
                self.stats.append(json.loads(msg.payload))

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            return self.stats[-1] if self.stats else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def agent_config(
    workdir: Path,
    broker: Broker,
    bundle: Path,
    agent_id: str,
    stats_interval_s: float = STATS_INTERVAL_S,
    protocol: str = "5",
    readings_client: str = "auto",
) -> Path:
    """A config of defaults but for the bundle, topics, a short stats interval and a fresh state directory
    (an alert left open by an earlier run would continue instead of opening)."""
    path = workdir / f"{agent_id}.toml"
    shutil.rmtree(workdir / agent_id, ignore_errors=True)
    path.write_text(
        f'[mqtt]\nbroker = "mqtt://{broker.host}:{broker.port}"\ntopics = ["{TOPIC_ROOT}/+/data"]\n'
        f'topic_prefix = "{PREFIX}"\nclient_id = "{agent_id}"\nprotocol = "{protocol}"\n'
        f'readings_client = "{readings_client}"\n\n'
        f'[model]\nbundle = "{bundle.resolve()}"\n\n'
        f'[stats]\ninterval_s = {stats_interval_s}\n\n[state]\ndirectory = "{(workdir / agent_id).resolve()}"\n'
    )
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "edgevae.agent", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def accounted(stats: dict[str, Any], per_message: int) -> int:
    """Readings the agent scored or counted as dropped (a message dropped whole counts its readings)."""
    dropped = stats["dropped"]
    whole = sum(dropped.get(r, 0) for r in ("queue_full", "oversized", "not_json", "too_many_readings", "bad_topic"))
    return int(stats["readings"] + whole * per_message + sum(dropped.values()) - whole)


def agent_throughput(
    workdir: Path, broker: Broker, bundle: Path, messages: Messages, name: str, protocol: str = "5",
    readings_client: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """The agent's readings/s, CPU per reading, drops, peak RSS and start-to-online on these messages."""
    agent_id = f"bench-{name}"
    config = agent_config(workdir, broker, bundle, agent_id, protocol=protocol, readings_client=readings_client)
    watch = AgentWatch(broker, agent_id)
    launched = time.perf_counter()
    agent = start_agent(config, workdir / f"{agent_id}.log")
    try:
        if not watch.online.wait(60):
            msg = f"the agent did not come online in 60 s; see {workdir / f'{agent_id}.log'}"
            raise RuntimeError(msg)
        online_s = time.perf_counter() - launched
        watch.health.wait(20)  # the start-up self-test runs in the background: not part of the measurement
        agent.send_signal(signal.SIGSTOP)
        run_publisher(broker, messages)
        time.sleep(0.2)
        started, cpu_before = time.time(), _cpu_s(agent.pid)
        agent.send_signal(signal.SIGCONT)
        final = _wait_done(watch, messages, started)
        cpu = _cpu_s(agent.pid) - cpu_before
        rss_mib = peak_rss_kib(agent.pid) / 1024
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGCONT)
            agent.terminate()
        agent.wait(30)
        watch.close()
    scored = final["readings"]
    seconds = final["time"] - started
    return {
        "readings_per_s": scored / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "cpu_us_per_reading": 1e6 * cpu / max(scored, 1),
        "dropped": {k: v for k, v in final["dropped"].items() if v},
        "lost": messages.readings - accounted(final, messages.per_message),
        "windows_scored": final["windows_scored"],
        "batches": final["batches"],
        "peak_rss_mib": rss_mib,
        "start_to_online_s": online_s,
    }


def _wait_done(watch: AgentWatch, messages: Messages, started: float) -> dict[str, Any]:
    """The first stats message that accounts for every reading, or the last one before progress stalled."""
    progress, moved = -1, time.monotonic()
    while True:
        with watch._lock:
            seen = [s for s in watch.stats if s["time"] >= started]
        for stats in seen:
            if accounted(stats, messages.per_message) >= messages.readings:
                return stats
        latest = seen[-1] if seen else None
        count = accounted(latest, messages.per_message) if latest else -1
        if count != progress:
            progress, moved = count, time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            if latest is None:
                msg = "the agent published no stats after it was resumed"
                raise RuntimeError(msg)
            return latest
        time.sleep(0.05)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM) so far; 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def windows_expected(rows: int, window: int, stride: int) -> int:
    return 0 if rows < window else (rows - window) // stride + 1


def ratio(value: float, ceiling_value: float) -> float:
    return value / ceiling_value if ceiling_value > 0 else float(np.nan)
