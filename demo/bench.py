"""`edgevae bench`: the agent's hot path against its ceilings, measured side by side in one run.

- throughput: the bare paho subscriber and the agent on the same broker and messages, 1 and 100 readings
  a message, stride 1 (the default) and 8, FP32 and INT8 bundles (edgevae.demo.bench_stream);
- publish→alert latency at a steady rate from many devices, beside the broker's own round trip
  (edgevae.demo.bench_latency);
- `edgevae score` on a long file beside a bare ONNX Runtime loop (edgevae.demo.bench_offline).

`--quick` runs every part at a small size (the test suite runs it, so that the benchmark keeps working);
its figures are not the benchmark's. The full run writes results.json and report.md under `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from edgevae.agent.bundle import DEFAULT_PRECISION, load_bundle, write_manifest
from edgevae.demo.bench_latency import latency
from edgevae.demo.bench_offline import offline
from edgevae.demo.bench_report import machine, render
from edgevae.demo.bench_stream import Messages, agent_throughput, ceiling, prepare_messages
from edgevae.demo.broker import Broker, start_broker


@dataclasses.dataclass(frozen=True)
class Scale:
    rows_single: int  # readings per device with one reading a message
    rows_batched: int  # readings per device with 100 a message
    devices: int
    latency_devices: int
    latency_seconds: float
    latency_rate: float
    offline_rows: int
    epochs: int | None  # of the benchmark's model; None: edgevae train's default


FULL = Scale(15_000, 125_000, 4, 100, 30.0, 2000.0, 1_000_000, None)
QUICK = Scale(300, 1_000, 2, 10, 4.0, 200.0, 5_000, 1)
STRIDES = (1, 8)
PRECISIONS = ("fp32", "int8")
PER_MESSAGE = (1, 100)
PROTOCOLS = ("5", "3.1.1")
CLIENTS = ("paho", "libmosquitto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="every part at a small size (a check, not figures)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"),
                        help="where results.json and report.md go (default: docs/bench)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("build/bench"),
                        help="the model, messages and logs (default: build/bench)")  # fmt: skip


def readings_client() -> str:
    """What the agent's default `mqtt.readings_client` (auto) takes on this machine."""
    from edgevae.agent import libmosquitto

    try:
        return f"libmosquitto {libmosquitto.load().version}"
    except libmosquitto.LibraryUnavailable:
        return "paho"


def bundles(workdir: Path, scale: Scale) -> dict[tuple[str, int], Path]:
    """(precision, stride) -> bundle: a VAE of the simulated plant, trained once per workdir."""
    from edgevae.export.bundle_writer import export_bundle
    from edgevae.training.config import TrainConfig
    from edgevae.training.train_vae import train

    run = workdir / "run"
    if not (run / "meta.json").exists():
        cfg = TrainConfig(data=None, out=run, seed=0)
        if scale.epochs is not None:
            cfg.epochs = scale.epochs
        train(cfg)
    out: dict[tuple[str, int], Path] = {}
    for precision in PRECISIONS:
        base = workdir / f"bundle-{precision}"
        if not (base / "manifest.json").exists():
            export_bundle(run, base, precision=precision, model_id="bench")
        for stride in STRIDES:
            out[precision, stride] = _with_stride(base, stride)
    return out


def _with_stride(base: Path, stride: int) -> Path:
    """The bundle scoring at another stride: the same model and threshold, windows `stride` rows apart."""
    with closing(load_bundle(base)) as bundle:
        manifest = bundle.manifest
    if manifest.stride == stride:
        return base
    variant = base.with_name(f"{base.name}-stride{stride}")
    if not (variant / "manifest.json").exists():
        shutil.copytree(base, variant, dirs_exist_ok=True)
        write_manifest(variant, dataclasses.replace(manifest, stride=stride))
    return variant


def protocols(workdir: Path, broker: Broker, bundle: Path, messages: Messages) -> list[dict[str, Any]]:
    """paho's receive path costs more in MQTT 5 than in 3.1.1: one reading a message, stride 1, each protocol
    for the bare subscriber and the agent (`mqtt.protocol`), on the same messages."""
    rows: list[dict[str, Any]] = []
    for protocol in PROTOCOLS:
        top = ceiling(broker, messages, protocol)
        name = f"{DEFAULT_PRECISION.value}-s1-m1-mqtt{protocol}"
        got = agent_throughput(workdir, broker, bundle, messages, name, protocol)
        got["ratio"] = got["readings_per_s"] / top["readings_per_s"] if top["readings_per_s"] else 0.0
        print(f"MQTT {protocol}: bare {top['readings_per_s']:,.0f}, agent {got['readings_per_s']:,.0f} readings/s",
              flush=True)  # fmt: skip
        rows.append({"protocol": protocol, "bare": top, "agent": got})
    return rows


def clients(workdir: Path, broker: Broker, bundle: Path, messages: Messages) -> list[dict[str, Any]]:
    """paho decodes in Python, libmosquitto in C: one reading a message, stride 1, the default precision;
    the bare subscriber on each client and the agent with each `mqtt.readings_client`, on the same messages."""
    rows: list[dict[str, Any]] = []
    for client in CLIENTS:
        top = ceiling(broker, messages, client=client)
        name = f"{DEFAULT_PRECISION.value}-s1-m1-{client}"
        got = agent_throughput(workdir, broker, bundle, messages, name, readings_client=client)
        print(f"{client}: bare {top['readings_per_s']:,.0f}, agent {got['readings_per_s']:,.0f} readings/s", flush=True)
        rows.append({"client": client, "bare": top, "agent": got})
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = QUICK if args.quick else FULL
    workdir: Path = args.workdir / ("quick" if args.quick else "full")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"quick": args.quick, "machine": machine(), "scale": dataclasses.asdict(scale),
                               "readings_client": readings_client()}  # fmt: skip
    models = bundles(workdir, scale)
    with closing(load_bundle(models[DEFAULT_PRECISION.value, 1])) as default:
        results["bundle"] = {"window": default.manifest.window, "stride": default.manifest.stride,
                             "channels": len(default.manifest.channels),
                             "precision": DEFAULT_PRECISION.value}  # fmt: skip
    rows: list[dict[str, Any]] = []
    prepared: dict[int, Messages] = {}
    with start_broker(prefer="mosquitto") as broker:
        for per_message in PER_MESSAGE:
            per_device = scale.rows_single if per_message == 1 else scale.rows_batched
            messages = prepared[per_message] = prepare_messages(workdir, per_device, scale.devices, per_message)
            top = ceiling(broker, messages)
            print(f"bare subscriber, {per_message}/message: {top['readings_per_s']:,.0f} readings/s", flush=True)
            rows.append({"consumer": "bare paho subscriber", "per_message": per_message, **top})
            for precision in PRECISIONS:
                for stride in STRIDES:
                    name = f"{precision}-s{stride}-m{per_message}"
                    got = agent_throughput(workdir, broker, models[precision, stride], messages, name)
                    got["ratio"] = got["readings_per_s"] / top["readings_per_s"] if top["readings_per_s"] else 0.0
                    print(f"agent {name}: {got['readings_per_s']:,.0f} readings/s ({got['ratio']:.3f})", flush=True)
                    rows.append({"consumer": "agent", "per_message": per_message, "precision": precision,
                                 "stride": stride, **got})  # fmt: skip
        results["throughput"] = rows
        results["protocols"] = protocols(workdir, broker, models[DEFAULT_PRECISION.value, 1], prepared[1])
        results["clients"] = clients(workdir, broker, models[DEFAULT_PRECISION.value, 1], prepared[1])
        results["latency"] = latency(workdir, broker, models[DEFAULT_PRECISION.value, 1], scale.latency_devices,
                                     scale.latency_seconds, scale.latency_rate)  # fmt: skip
    results["offline"] = {p: offline(workdir, models[p, 1], scale.offline_rows) for p in PRECISIONS}
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def run_from_args(args: argparse.Namespace) -> int:
    results = run(args)
    report = render(results)
    print(report)
    out: Path = args.out if not args.quick else args.workdir / "quick"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "report.md").write_text(report)
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return 0
