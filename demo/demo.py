"""`edgevae demo`: train on a simulated plant (or your data), export an INT8 bundle, start a broker and the
agent, replay a stream with injected faults and report which faults the agent caught."""

from __future__ import annotations

import argparse
import json
import os
import queue
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
from paho.mqtt.enums import CallbackAPIVersion

from edgevae.agent.bundle import PRECISIONS, Precision
from edgevae.agent.readings import encode_payloads
from edgevae.agent.table import Table, read_table
from edgevae.agent.topics import Topics, fleet_filter
from edgevae.demo.broker import Broker, start_broker
from edgevae.training.simulate import Fault, random_faults, simulate_plant

TOPIC_ROOT = "demo"
PREFIX = "edgevae"
AGENT_ID = "edgevae-demo-agent"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # What to train on
    parser.add_argument(
        "--data", type=Path, default=None, help="train on this CSV or folder instead of the simulated plant"
    )
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="CSV to replay (labelled rows count as faults); "
        "default: a fresh simulated stream per device with injected faults",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(".demo"), help="where runs and bundles go (default: .demo)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs at most (default: edgevae train's)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=Precision.INT8.value,
        help="bundle precision (default: %(default)s, the compressed bundle a small device would take; "
        "edgevae export's own default is fp32)",
    )
    # What to replay
    parser.add_argument("--devices", type=int, default=3, help="simulated devices streaming at once (default: 3)")
    parser.add_argument("--rows", type=int, default=4000, help="readings per device in the replay (default: 4000)")
    parser.add_argument("--faults", type=int, default=2, help="faults injected per device (default: 2)")
    parser.add_argument("--rate", type=float, default=400.0, help="readings per second per device (default: 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed for training and the simulated streams")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train and export again even when --workdir holds a bundle of the same data and settings",
    )


@dataclass
class InjectedFault:
    device: str
    channel: str
    kind: str
    start_ts: float
    end_ts: float
    stream_start: float


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


KEY_FILE = "demo-key.json"


def _model_key(args: argparse.Namespace) -> dict[str, Any]:
    """What the demo's model depends on: the data's bytes, the settings and the installed version."""
    from edgevae.agent.bundle import sha256_file
    from edgevae.agent.install import version

    data = sha256_file(args.data) if args.data else "simulated plant"
    return {"data": data, "seed": args.seed, "epochs": args.epochs, "precision": args.precision, "version": version()}


def _reusable(args: argparse.Namespace, key: dict[str, Any]) -> Path | None:
    """The bundle of an earlier run with the same key, if it still loads."""
    from edgevae.agent.bundle import load_bundle
    from edgevae.core.errors import BundleError

    workdir: Path = args.workdir
    bundle, key_file = workdir / "bundle", workdir / KEY_FILE
    if args.retrain or not key_file.is_file():
        return None
    try:
        if json.loads(key_file.read_text()) != key:
            return None
        load_bundle(bundle).close()
    except (OSError, ValueError, BundleError):
        return None
    return bundle


def _model(args: argparse.Namespace) -> Path:
    """The demo's bundle: the one trained before on the same data and settings, else a new one."""
    key = _model_key(args)
    reused = _reusable(args, key)
    if reused is not None:
        _banner(f"reusing the bundle in {reused}: same data and settings (--retrain trains again)")
        return reused
    for own in ("run", "bundle"):
        shutil.rmtree(args.workdir / own, ignore_errors=True)
    (args.workdir / KEY_FILE).unlink(missing_ok=True)
    bundle = _train_and_export(args)
    (args.workdir / KEY_FILE).write_text(json.dumps(key, indent=1) + "\n")
    return bundle


def _train_and_export(args: argparse.Namespace) -> Path:
    from edgevae.export.bundle_writer import export_bundle
    from edgevae.training.config import TrainConfig
    from edgevae.training.train_vae import train

    _banner("training a VAE" + (f" on {args.data}" if args.data else " on the simulated plant"))
    started = time.perf_counter()
    cfg = TrainConfig(data=args.data, out=args.workdir / "run", seed=args.seed)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    run_dir = train(cfg)
    meta = json.loads((run_dir / "meta.json").read_text())
    print(f"trained in {time.perf_counter() - started:.1f} s; best validation metrics: {meta['metrics']}")

    _banner(f"exporting a {args.precision.upper()} bundle")
    model_id = f"demo-{args.data.stem}" if args.data else "demo-simulated-pump"
    report = export_bundle(run_dir, args.workdir / "bundle", precision=args.precision, model_id=model_id)
    print(report.summary())
    return report.bundle


def _replay_streams(
    args: argparse.Namespace, channels: tuple[str, ...]
) -> tuple[dict[str, Table], list[InjectedFault]]:
    if args.replay is not None:
        table = read_table(args.replay)
        return {"device-1": table}, _faults_from_labels("device-1", table)
    streams: dict[str, Table] = {}
    injected: list[InjectedFault] = []
    for i in range(args.devices):
        device = f"pump-{i + 1}"
        faults = random_faults(args.rows, args.faults, seed=args.seed + 101 + i)
        table = simulate_plant(args.rows, seed=args.seed + 1001 + i, faults=faults)
        streams[device] = table
        injected += [_injected(device, fault, table) for fault in faults]
    return streams, injected


def _injected(device: str, fault: Fault, table: Table) -> InjectedFault:
    end = min(fault.start + fault.length, len(table.timestamps)) - 1
    ts = table.timestamps
    return InjectedFault(device, fault.channel, fault.kind, ts[fault.start], ts[end], ts[0])


def _faults_from_labels(device: str, table: Table) -> list[InjectedFault]:
    if table.labels is None:
        return []
    labels = np.concatenate([[0], table.labels.astype(np.int8), [0]])
    starts = np.flatnonzero(np.diff(labels) == 1)
    ends = np.flatnonzero(np.diff(labels) == -1) - 1
    ts = table.timestamps
    return [InjectedFault(device, "?", "labelled", ts[s], ts[e], ts[0]) for s, e in zip(starts, ends, strict=True)]


class AlertListener:
    """Subscribes to every alert and stats topic and prints alerts as they arrive."""

    def __init__(self, broker: Broker) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.online = threading.Event()
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgevae-demo-listener")
        out = Topics(PREFIX, AGENT_ID)
        topics = [(fleet_filter(PREFIX, "alert"), 1), (fleet_filter(PREFIX, "stats"), 0), (out.availability, 1)]
        self.client.on_connect = lambda c, *_: c.subscribe(topics)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/availability"):
            if msg.payload == b"online":
                self.online.set()
            return
        self._inbox.put((msg.topic, bytes(msg.payload)))

    def drain(self) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            message = json.loads(payload)
            if topic.endswith("/stats"):
                self.stats[topic] = message
                continue
            self.alerts.append(message)
            top = ", ".join(f"{c['channel']} {c['share']:.0%}" for c in message.get("top_channels", []))
            print(
                f"  [{message['type']:>5}] {message['device']}: score {message['score']:.3g} "
                f"(threshold {message['threshold']:.3g}) top: {top}",
                flush=True,
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _publish_streams(broker: Broker, streams: dict[str, Table], rate: float, listener: AlertListener) -> float:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgevae-demo-replay")
    client.connect(broker.host, broker.port)
    client.loop_start()
    payloads = {device: encode_payloads(t.timestamps, t.values, t.channels) for device, t in streams.items()}
    rows = max(len(p) for p in payloads.values())
    started = time.perf_counter()
    for row in range(rows):
        for device, messages in payloads.items():
            if row < len(messages):
                client.publish(f"{TOPIC_ROOT}/{device}/data", messages[row], qos=0)
        # Pace the replay so it behaves like sensors, not a bulk upload.
        lag = (row + 1) / rate - (time.perf_counter() - started)
        if lag > 0:
            time.sleep(lag)
        if row % 200 == 0:
            listener.drain()
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return elapsed


def _start_agent(bundle: Path, broker: Broker, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "agent.toml"
    config.write_text(
        f'[mqtt]\nbroker = "mqtt://{broker.host}:{broker.port}"\nprotocol = "{broker.protocol}"\n'
        f'topics = ["{TOPIC_ROOT}/+/data"]\n'
        f'topic_prefix = "{PREFIX}"\nclient_id = "{AGENT_ID}"\n\n'
        f'[model]\nbundle = "{bundle.resolve()}"\n\n[stats]\ninterval_s = 1\n\n'
        # Its own state, started afresh with each demo: no alert of an earlier, interrupted run comes back.
        f'[state]\ndirectory = "{(workdir / "state").resolve()}"\n'
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    print(f"agent log: {workdir / 'agent.log'}")
    # The child holds its own copy of the descriptor: ours closes at once.
    with (workdir / "agent.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edgevae.agent", "--config", str(config)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _summarize(injected: list[InjectedFault], alerts: list[dict[str, Any]], window_s: float) -> tuple[int, int]:
    opened = [a for a in alerts if a["type"] == "alert"]
    caught = 0
    matched_alerts: set[str] = set()
    print(f"\n{'device':<10} {'channel':<12} {'kind':<8} {'fault (s into stream)':<21} caught by")
    for fault in injected:
        hits = [
            a
            for a in opened
            if a["device"] == fault.device and fault.start_ts <= a["window_end"] <= fault.end_ts + window_s
        ]
        matched_alerts.update(a["id"] for a in hits)
        caught += bool(hits)
        by = ", ".join(f"alert top={a['top_channels'][0]['channel']}" for a in hits) or "MISSED"
        span = f"{fault.start_ts - fault.stream_start:.0f}..{fault.end_ts - fault.stream_start:.0f} s"
        print(f"{fault.device:<10} {fault.channel:<12} {fault.kind:<8} {span:<21} {by}")
    false_alerts = [a for a in opened if a["id"] not in matched_alerts]
    print(
        f"\nfaults injected: {len(injected)}  caught: {caught}  alerts raised: {len(opened)}  "
        f"false alerts: {len(false_alerts)}  alerts ended: {sum(a['type'] == 'end' for a in alerts)}"
    )
    return caught, len(false_alerts)


def run_demo(args: argparse.Namespace) -> int:
    args.workdir.mkdir(parents=True, exist_ok=True)
    # The demo owns these folders: the agent's state starts afresh; the model is kept when it would be the same.
    shutil.rmtree(args.workdir / "state", ignore_errors=True)
    bundle = _model(args)
    from edgevae.agent.bundle import load_bundle

    manifest = load_bundle(bundle).manifest
    streams, injected = _replay_streams(args, manifest.channels)

    _banner("starting a broker and the agent")
    with start_broker() as broker:
        print(f"broker: {broker.kind} on {broker.host}:{broker.port}")
        listener = AlertListener(broker)
        agent = _start_agent(bundle, broker, args.workdir)
        try:
            _wait_online(listener, agent)
            total = sum(len(t.timestamps) for t in streams.values())
            _banner(f"replaying {total} readings from {len(streams)} device(s) with {len(injected)} faults")
            elapsed = _publish_streams(broker, streams, args.rate, listener)
            time.sleep(2.5)  # the last windows and the final stats message are in flight
            listener.drain()
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=20)
            listener.close()

    _banner("summary")
    window_s = manifest.window * manifest.sample_period_s
    caught, false_alerts = _summarize(injected, listener.alerts, window_s)
    stats = next(iter(listener.stats.values()), {})
    scored = int(stats.get("windows_scored", 0))
    dropped = {reason: n for reason, n in stats.get("dropped", {}).items() if n} or "nothing"
    print(
        f"replayed {total} readings in {elapsed:.1f} s ({total / elapsed:,.0f} readings/s, paced by --rate); the agent "
        f"scored {scored} windows in {stats.get('batches', '?')} batches ({scored / elapsed:,.0f} windows/s) "
        f"and dropped {dropped}"
    )
    print(f"agent exit code: {agent.returncode}; its log: {args.workdir / 'agent.log'}")
    return 0 if caught == len(injected) and agent.returncode == 0 else 1


def _wait_online(listener: AlertListener, agent: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            msg = f"the agent exited with code {agent.returncode} before it came online (see agent.log)"
            raise RuntimeError(msg)
        if listener.online.wait(0.1):
            return
    msg = f"the agent did not come online within {timeout:.0f} s (see agent.log)"
    raise RuntimeError(msg)
