"""A tiny real ONNX scoring model, bundles around it, predictable sensor streams and an MQTT message collector."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import paho.mqtt.client as mqtt
from onnx import TensorProto, helper, numpy_helper
from paho.mqtt.enums import CallbackAPIVersion

from edgevae.agent.bundle import Manifest, describe_files, write_manifest
from edgevae.agent.golden import GOLDEN_FILE, write_golden
from edgevae.agent.mqtt import PROTOCOLS
from edgevae.agent.readings import encode_payloads
from edgevae.agent.topics import Topics
from edgevae.core.decision import Debounce, Debouncer, Threshold
from edgevae.core.window import sliding_windows, window_count
from edgevae.demo.broker import Broker

CHANNELS = ("temp", "pressure", "flow")
MEAN = np.array([20.0, 5.0, 100.0])
STD = np.array([1.0, 0.5, 10.0])
WINDOW, STRIDE = 8, 4
THRESHOLD = 1.0
TRIGGER, CLEAR = 2, 2
PERIOD_S = 1.0
T0 = 1_700_000_000.0


# --- the model -------------------------------------------------------------------------------------------


def build_model(path: Path, window: int = WINDOW) -> Path:
    """The graph contract by hand: channel_error = mean over time of ((x - MEAN) / STD)^2, score = its mean."""
    channels = len(CHANNELS)
    mean = numpy_helper.from_array(MEAN.astype(np.float32).reshape(1, 1, channels), "mean")
    std = numpy_helper.from_array(STD.astype(np.float32).reshape(1, 1, channels), "std")
    nodes = [
        helper.make_node("Sub", ["window", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["channel_error"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["channel_error"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_scorer",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", window, channels])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("channel_error", TensorProto.FLOAT, ["batch", channels]),
        ],
        initializer=[mean, std],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_bundle(
    root: Path,
    window: int = WINDOW,
    stride: int = STRIDE,
    threshold: float = THRESHOLD,
    trigger: int = TRIGGER,
    clear: int = CLEAR,
    model_version: str = "1.0.0",
    channels: tuple[str, ...] = CHANNELS,
    distribution: bool = False,
) -> Path:
    """The tiny model as a bundle; `channels` renames the model's inputs (the graph is the same);
    `distribution` adds the training distribution of `stream` (its ranges and window scores) for drift."""
    root.mkdir(parents=True, exist_ok=True)
    build_model(root / "model.onnx", window)
    golden_windows = sliding_windows(stream(4 * window).astype(np.float32), window, window)
    golden = write_golden(root, golden_windows, reference_scores(stream(4 * window), window, window)[0])
    manifest = Manifest(
        model_id="tiny-zscore",
        model_version=model_version,
        channels=channels,
        window=window,
        stride=stride,
        sample_period_s=PERIOD_S,
        precision="fp32",
        model_file="model.onnx",
        threshold=Threshold(value=threshold, method="fixed"),
        debounce=Debounce(trigger=trigger, clear=clear),
        files=describe_files(root, ["model.onnx", GOLDEN_FILE]),
        golden=golden,
    )
    if distribution:
        from edgevae.agent.distribution import DriftReference
        from edgevae.core.drift import ChannelRanges

        training = noisy(stream(2000), seed=0)
        scores = reference_scores(training, window, stride)[0]
        reference = DriftReference.build(ChannelRanges.fit(training, channels), scores)
        manifest = dataclasses.replace(manifest, distribution=reference.to_entry())
    write_manifest(root, manifest)
    return root


def reference_scores(values: np.ndarray, window: int = WINDOW, stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """What the model computes, in numpy: (scores (n,), channel_error (n, C)) of every window."""
    z = (sliding_windows(values.astype(np.float32), window, stride) - MEAN) / STD
    channel_error = (z**2).mean(axis=1)
    return channel_error.mean(axis=1), channel_error


def expected_alerts(values: np.ndarray, window: int = WINDOW, stride: int = STRIDE) -> list[tuple[str, int]]:
    """(type, window number) of every alert open and end the agent must publish for this stream."""
    scores, _ = reference_scores(values, window, stride)
    threshold, debounce, events = Threshold(THRESHOLD), Debouncer(Debounce(TRIGGER, CLEAR)), []
    for k, score in enumerate(scores.tolist()):
        transition = debounce.update(threshold.classify(score)).value
        if transition != "none":
            events.append(("alert" if transition == "open" else "end", k))
    return events


# --- streams ---------------------------------------------------------------------------------------------


def stream(rows: int, fault: tuple[str, int, int] | None = None, phase: float = 0.0) -> np.ndarray:
    """(rows, C) readings: each channel swings half a std around its mean (score 0.125); a fault adds 3 std
    to one channel over rows [start, end)."""
    t = np.arange(rows, dtype=np.float64)[:, None]
    values = MEAN + 0.5 * STD * np.sin(2 * np.pi * t / 7.0 + phase + np.arange(len(CHANNELS)))
    if fault is not None:
        channel, start, end = fault
        values[start:end, CHANNELS.index(channel)] += 3.0 * STD[CHANNELS.index(channel)]
    return values


def noisy(values: np.ndarray, seed: int, scale: float = 0.3) -> np.ndarray:
    """`values` with Gaussian noise of `scale` stds: scores of a continuous distribution, as real data has."""
    return values + np.random.default_rng(seed).normal(0.0, scale, values.shape) * STD


def timestamps(rows: int, start: float = T0) -> np.ndarray:
    return start + PERIOD_S * np.arange(rows, dtype=np.float64)


def reading(ts: float, row: np.ndarray | list[float]) -> dict[str, Any]:
    return {"ts": ts, "values": dict(zip(CHANNELS, [float(v) for v in row], strict=True))}


def batched_payloads(values: np.ndarray, start: float = T0, per_message: int = 8) -> list[bytes]:
    return encode_payloads(timestamps(len(values), start), values, CHANNELS, per_message)


def windows_for(rows: int, window: int = WINDOW, stride: int = STRIDE) -> int:
    return window_count(rows, window, stride)


# --- the broker ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    correlation: bytes | None = None  # MQTT 5 correlation data

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Subscribes to `topics` and keeps every message; tests wait on conditions, never on sleeps."""

    def __init__(self, broker: Broker, topics: list[str], timeout: float = 10.0) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=PROTOCOLS[broker.protocol])
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            msg = f"no SUBACK for {topics} within {timeout} s"
            raise TimeoutError(msg)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            correlation = getattr(getattr(msg, "properties", None), "CorrelationData", None)
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), correlation))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Wait until predicate(messages) is truthy and return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self.messages))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    msg = f"timed out after {timeout} s waiting for {what or predicate}; topics seen: {topics}"
                    raise TimeoutError(msg)
                self._cond.wait(left)

    def wait_stopped(self, names: Names, timeout: float = 10.0, reason: str = "stopped") -> Message:
        """A clean stop: `offline` availability after an offline reason of `stopped` (the last will sends
        `offline` with the reason still `connection_lost`)."""

        def stopped(ms: list[Message]) -> Message | None:
            reasons = [i for i, m in enumerate(ms) if m.topic == names.offline_reason and m.json()["reason"] == reason]
            if not reasons:
                return None
            return next((m for m in ms[reasons[-1] :] if m.topic == names.status and m.payload == b"offline"), None)

        found: Message = self.wait_for(stopped, timeout, f"a clean stop of {names.agent_id}")
        return found

    def wait_payload(self, topic: str, payload: bytes, timeout: float = 10.0) -> Message:
        found: Message = self.wait_for(
            lambda ms: next((m for m in ms if m.topic == topic and m.payload == payload), None),
            timeout,
            f"{payload!r} on {topic}",
        )
        return found

    def latest_json(self, topic: str, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Wait for a JSON message on `topic` that satisfies predicate; return it parsed."""

        def find(ms: list[Message]) -> Any:
            for m in reversed(ms):
                if m.topic == topic and m.payload and predicate(m.json()):  # empty: a retained message cleared
                    return m.json()
            return None

        return self.wait_for(find, timeout, f"a matching message on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=PROTOCOLS[broker.protocol])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payloads: list[bytes] | bytes, timeout: float = 10.0, properties: Any = None) -> None:
        """Publish QoS 1 in order and wait until the broker has every message."""
        items = [payloads] if isinstance(payloads, bytes) else payloads
        infos = [self.client.publish(topic, p, qos=1, properties=properties) for p in items]
        for info in infos:
            info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the agent ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """Topics unique to one test, so retained messages of one test never reach another."""

    root: str  # sensor topics are <root>/<device>/data
    prefix: str  # the agent publishes under <prefix>/
    agent_id: str

    def data(self, device: str) -> str:
        return f"{self.root}/{device}/data"

    @property
    def out(self) -> Topics:
        return Topics(self.prefix, self.agent_id)

    def alert(self, device: str) -> str:
        return self.out.alert(device)

    def state(self, device: str) -> str:
        return self.out.state(device)

    def agent_topic(self, leaf: str) -> str:
        return self.out.agent_topic(leaf)

    @property
    def status(self) -> str:
        return self.out.availability

    @property
    def offline_reason(self) -> str:
        return self.out.offline_reason

    @property
    def stats(self) -> str:
        return self.out.agent_topic("stats")


def agent_document(broker: Broker, bundle: Path, names: Names, **sections: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "mqtt": {
            "broker": broker.url,
            "topics": [f"{names.root}/+/data"],
            "topic_prefix": names.prefix,
            "client_id": names.agent_id,
        },
        "model": {"bundle": str(bundle)},
        "stats": {"interval_s": 0.2},
        # The tiny model's std is three times its streams': faults of 10 stream stds are some 3 of the model's,
        # the size the default magnitude means for a model fit to its data.
        "selftest": {"magnitude": 10.0},
    }
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    return doc


@contextmanager
def agent_process(config_file: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m edgevae.agent --config FILE` as a child process, its output in FILE.log; killed if still running."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    with config_file.with_suffix(".log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgevae.agent", "--config", str(config_file), *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def to_toml(doc: dict[str, Any]) -> str:
    """Enough TOML for agent configs: tables of strings, numbers, booleans and lists of strings, and tables
    within them (a dict value, e.g. mqtt.tls, becomes [mqtt.tls])."""
    lines: list[str] = []
    for section, values in doc.items():
        lines.extend(_toml_table(section, values))
    return "\n".join(lines) + "\n"


def _toml_table(name: str, values: dict[str, Any]) -> list[str]:
    # A table's own keys come before its subtables: a key after [mqtt.tls] would belong to mqtt.tls.
    lines = [f"[{name}]"]
    lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items() if not isinstance(value, dict))
    for key, value in values.items():
        if isinstance(value, dict):
            lines.extend(_toml_table(f"{name}.{key}", value))
    return lines


# --- a static web server ------------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve `folder` (a model repository, say) on a free loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    # A short poll: shutdown() waits for the serving loop to look, 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The agent's Prometheus metrics: {name: {labels: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples
