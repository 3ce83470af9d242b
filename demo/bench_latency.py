"""Publish→alert latency at a steady rate from many devices, against the broker's own publish→subscribe
time in the same run.

Each device streams single-reading messages and gets one step fault (an offset on one channel from a
random row to its end). The publisher records when it handed each message to paho; this process
subscribes to the sensor topics (the broker's round trip: publish to delivery) and to the agent's alerts.
An alert names the window that opened it; its latency is from the publish of that window's last reading
to the alert's arrival here. Both figures go through the same broker, client library and clocks.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgevae.agent.readings import encode_payloads
from edgevae.agent.topics import fleet_filter
from edgevae.demo.bench_child import save_messages
from edgevae.demo.bench_stream import PREFIX, TOPIC_ROOT, AgentWatch, Messages, agent_config, run_publisher, start_agent
from edgevae.demo.broker import Broker
from edgevae.training.simulate import SPREAD, simulate_plant

STEP_SPREADS = 8.0  # the fault's size in the channel's spread: an alert every run, as the figure needs


def prepare_faulty(workdir: Path, devices: int, seconds: float, rate: float, seed: int = 0) -> tuple[Messages, Any]:
    """Single-reading messages, devices interleaved, at `rate` readings/s in all; one step fault a device."""
    rows = int(seconds * rate / devices)
    rng = np.random.default_rng(seed)
    per_device, keys = [], []
    for d in range(devices):
        table = simulate_plant(rows, seed=seed + 500 + d)
        values = table.values.copy()
        start = int(rng.integers(rows // 3, 2 * rows // 3))
        channel = int(rng.integers(values.shape[1]))
        values[start:, channel] += STEP_SPREADS * SPREAD[channel]
        per_device.append(encode_payloads(table.timestamps, values, table.channels))
        keys.append(table.timestamps)
    topics, payloads, index = [], [], []
    for i in range(rows):
        for d in range(devices):
            topics.append(f"{TOPIC_ROOT}/pump-{d}/data")
            payloads.append(per_device[d][i])
            index.append((f"pump-{d}", float(keys[d][i])))
    path = workdir / f"faulty-{devices}x{rows}.npz"
    save_messages(path, topics, payloads)
    return Messages(path, len(payloads), len(payloads), 1), index


class Prober:
    """Receives the sensor messages (the broker's delivery time) and the alerts."""

    def __init__(self, broker: Broker, devices: int) -> None:
        self.received: dict[str, list[float]] = {f"pump-{d}": [] for d in range(devices)}
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(f"{TOPIC_ROOT}/+/data", 1), (fleet_filter(PREFIX, "alert"), 1)]
        )
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.ready.wait(10)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.startswith(TOPIC_ROOT + "/"):
            self.received[msg.topic.split("/")[1]].append(now)
        else:
            self.alerts.append((now, json.loads(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def latency(workdir: Path, broker: Broker, bundle: Path, devices: int, seconds: float, rate: float) -> dict[str, Any]:
    messages, index = prepare_faulty(workdir, devices, seconds, rate)
    agent_id = "bench-latency"
    watch = AgentWatch(broker, agent_id)
    # Stats once a second: the latency run reads only the final counts.
    config = agent_config(workdir, broker, bundle, agent_id, stats_interval_s=1.0)
    agent = start_agent(config, workdir / f"{agent_id}.log")
    prober = Prober(broker, devices)
    sent_path = workdir / "latency-sent.npy"
    try:
        if not watch.online.wait(60):
            msg = f"the agent did not come online; see {workdir / f'{agent_id}.log'}"
            raise RuntimeError(msg)
        watch.health.wait(20)
        published = run_publisher(broker, messages, rate=rate, sent=sent_path)
        time.sleep(3.0)  # the last alerts
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        prober.close()
        watch.close()
    sent = np.load(sent_path)
    publish_time = {key: float(t) for key, t in zip(index, sent.tolist(), strict=True)}
    # The broker's round trip, per message: each device's messages arrive in order, one by one.
    sent_by_device: dict[str, list[float]] = {}
    for (device, _), t in zip(index, sent.tolist(), strict=True):
        sent_by_device.setdefault(device, []).append(t)
    broker_ms = np.concatenate([
        1e3 * (np.asarray(prober.received[d][: len(s)]) - np.asarray(s[: len(prober.received[d])]))
        for d, s in sent_by_device.items()
    ])  # fmt: skip
    alert_ms = [
        1e3 * (arrived - publish_time[(a["device"], float(a["window_end"]))])
        for arrived, a in prober.alerts
        if a.get("type") == "alert" and (a["device"], float(a["window_end"])) in publish_time
    ]
    stats = watch.latest() or {}
    return {
        "devices": devices,
        "rate": rate,
        "published_rate": messages.count / published["seconds"],
        "alerts": len(alert_ms),
        "faults": devices,
        "alert_p50_ms": _percentile(alert_ms, 50),
        "alert_p99_ms": _percentile(alert_ms, 99),
        "broker_p50_ms": _percentile(broker_ms, 50),
        "broker_p99_ms": _percentile(broker_ms, 99),
        "windows_scored": stats.get("windows_scored", 0),
        "batches": stats.get("batches", 0),
    }


def _percentile(values: Any, q: float) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float(np.percentile(array, q)) if len(array) else float("nan")
