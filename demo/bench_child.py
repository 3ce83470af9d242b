"""The benchmark's helper processes: a publisher of prepared messages, and the bare subscriber (paho, or
libmosquitto through the agent's binding) that sets the transport's ceiling. Each runs in its own process,
so that neither shares a GIL with what it measures; each prints one JSON line when done.

    python -m edgevae.demo.bench_child publish --port P --messages FILE.npz
    python -m edgevae.demo.bench_child subscribe --port P --filter 'bench/+/data' --expect N [--client C]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

QOS: Literal[1] = 1  # what the agent subscribes with by default (mqtt.qos)


PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


def save_messages(path: Path, topics: list[str], payloads: list[bytes]) -> None:
    """The messages to publish, in order, as the publisher reads them."""
    np.savez(path, topics=np.array(topics, dtype=object), payloads=np.array(payloads, dtype=object))


def _load_messages(path: Path) -> tuple[list[str], list[bytes]]:
    with np.load(path, allow_pickle=True) as data:  # written by save_messages, in this process tree
        return list(data["topics"]), list(data["payloads"])


def publish(host: str, port: int, messages: Path, rate: float = 0.0) -> dict[str, Any]:
    """Publish every message at QoS 1 (`rate` messages per second; 0: as fast as the broker acknowledges)
    and return once the broker has acknowledged the last one."""
    topics, payloads = _load_messages(messages)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    started = time.perf_counter()
    sent: list[float] = []
    last = None
    for i, (topic, payload) in enumerate(zip(topics, payloads, strict=True)):
        if rate > 0:
            lag = i / rate - (time.perf_counter() - started)
            if lag > 0:
                time.sleep(lag)
        sent.append(time.time())
        last = client.publish(topic, payload, qos=QOS)
    if last is not None:
        last.wait_for_publish(timeout=600)
    seconds = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return {"messages": len(payloads), "seconds": seconds, "sent": sent}


class _Counter:
    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.count = 0
        self.first = self.last = 0.0
        self.cpu_first = self.cpu_last = 0.0
        self.subscribed = threading.Event()
        self.done = threading.Event()

    def on_message(self, _client: Any, _userdata: Any, _msg: Any) -> None:
        if self.count == 0:
            self.first, self.cpu_first = time.time(), time.process_time()
        self.count += 1
        if self.count >= self.expect:
            self.last, self.cpu_last = time.time(), time.process_time()
            self.done.set()


def subscribe(
    host: str, port: int, topic_filter: str, expect: int, timeout: float, protocol: str = "5", client: str = "paho"
) -> dict[str, Any]:
    """Count messages on `topic_filter` until `expect` have come, with the agent's protocol and QoS and
    nothing else: with paho, the most a Python consumer on paho gets from this broker; with libmosquitto,
    the most one gets whose network loop runs in C."""
    counter = _Counter(expect)
    if client == "libmosquitto":
        _subscribe_libmosquitto(host, port, topic_filter, protocol, counter, timeout)
    else:
        paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=PROTOCOLS[protocol])
        paho.on_message = counter.on_message
        paho.on_subscribe = lambda *_: counter.subscribed.set()
        paho.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=QOS)
        paho.connect(host, port)
        paho.loop_start()
        counter.subscribed.wait(10)
        print(json.dumps({"ready": True}), flush=True)
        counter.done.wait(timeout)
        paho.loop_stop()
        paho.disconnect()
    return {
        "messages": counter.count,
        "first": counter.first,
        "last": counter.last,
        "cpu_s": counter.cpu_last - counter.cpu_first,
    }


def _subscribe_libmosquitto(
    host: str, port: int, topic_filter: str, protocol: str, counter: _Counter, timeout: float
) -> None:
    from edgevae.agent.config import MqttConfig
    from edgevae.agent.readings_client import MosquittoReadings

    cfg = MqttConfig(broker=f"mqtt://{host}:{port}", topics=(topic_filter,), protocol=protocol,  # type: ignore[arg-type]
                     session_expiry_s=0, qos=QOS)  # fmt: skip
    readings = MosquittoReadings(
        cfg, f"bench-{time.monotonic_ns()}", None, None, lambda *_: counter.on_message(0, 0, 0)
    )
    readings.start()
    readings.subscribed.wait(10)
    print(json.dumps({"ready": True}), flush=True)
    counter.done.wait(timeout)
    readings.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevae.demo.bench_child")
    sub = parser.add_subparsers(dest="role", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--host", default="127.0.0.1")
    pub.add_argument("--port", type=int, required=True)
    pub.add_argument("--messages", type=Path, required=True)
    pub.add_argument("--rate", type=float, default=0.0)
    pub.add_argument("--sent", type=Path, help="write each message's publish time (epoch s) here, as .npy")
    subscriber = sub.add_parser("subscribe")
    subscriber.add_argument("--host", default="127.0.0.1")
    subscriber.add_argument("--port", type=int, required=True)
    subscriber.add_argument("--filter", required=True)
    subscriber.add_argument("--expect", type=int, required=True)
    subscriber.add_argument("--timeout", type=float, default=600.0)
    subscriber.add_argument("--protocol", choices=sorted(PROTOCOLS), default="5")
    subscriber.add_argument("--client", choices=("paho", "libmosquitto"), default="paho")
    args = parser.parse_args(argv)
    if args.role == "publish":
        result = publish(args.host, args.port, args.messages, args.rate)
        sent = result.pop("sent")
        if args.sent is not None:
            np.save(args.sent, np.asarray(sent, dtype=np.float64))
    else:
        result = subscribe(args.host, args.port, args.filter, args.expect, args.timeout, args.protocol, args.client)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
