"""Scoring latency of the live stream with and without the self-test's sampling job running beside it.

    .venv/bin/python tests/tools/selftest_latency.py --bundle BUNDLE --data CSV [--seconds 30] [--rate 1000]

The agent runs in this process against a throwaway mosquitto, with the bundle's own settings. A publisher
replays rows of CSV (the bundle's channels) over `--devices` devices at `--rate` readings/s in all, one
reading per message. Latency is measured per scored window: from the publish of the window's last reading
to the end of the scoring pass that scored it. Two phases of `--seconds` each, in turn and repeated
`--rounds` times: the self-test off, and the self-test on and running back to back (the worst case: by
default it runs once an hour), sampling the bundle's generator when it ships one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="edgevae-state-")

from agent_fixtures import Names, Publisher, agent_document

from edgevae.agent.bundle import load_bundle
from edgevae.agent.config_file import load_config
from edgevae.agent.readings import encode_payloads
from edgevae.agent.service import Service
from edgevae.agent.table import read_table
from edgevae.demo.broker import Broker, start_broker


def one_phase(
    broker: Broker, bundle: Path, rows: np.ndarray, args: argparse.Namespace, selftest: bool
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    names = Names(root=f"plant-{tag}", prefix=f"edgevae-{tag}", agent_id=f"agent-{tag}")
    # Back to back: a new self-test 10 ms after the last one ends.
    section = {"enabled": selftest, "interval_s": 0.01}
    service = Service(load_config(agent_document(broker, bundle, names, selftest=section, stats={"interval_s": 5.0})))
    sent: dict[tuple[str, float], float] = {}
    latencies: list[float] = []
    step = service.detector.step

    def timed_step() -> Any:
        result = step()
        now = time.monotonic()
        latencies.extend(now - sent[(w.device, w.end_ts)] for w in result.windows if (w.device, w.end_ts) in sent)
        return result

    service.detector.step = timed_step  # type: ignore[method-assign]
    stop = threading.Event()
    agent = threading.Thread(target=service.run, args=(stop,), daemon=True)
    agent.start()
    time.sleep(2.0)  # connected, subscribed, first self-test under way
    publisher = Publisher(broker)
    channels = service.manifest.channels
    period = args.devices / args.rate
    started = time.monotonic()
    tests_before = service.health.runs if service.health is not None else 0
    i = 0
    while time.monotonic() - started < args.seconds:
        due = started + i * period
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        row = rows[i % len(rows)]
        ts = 1_700_000_000.0 + i
        for d in range(args.devices):
            device = f"pump-{d}"
            (payload,) = encode_payloads([ts], [row], channels)
            sent[(device, ts)] = time.monotonic()
            publisher.client.publish(names.data(device), payload, qos=0)
        i += 1
    time.sleep(1.0)
    tests = (service.health.runs if service.health is not None else 0) - tests_before
    publisher.close()
    stop.set()
    agent.join(15)
    ms = np.asarray(latencies) * 1000
    return {
        "windows": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()), "self_tests": tests, "readings": i * args.devices,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a CSV of normal rows with the bundle's channels")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="times each phase runs, alternating")
    parser.add_argument("--rate", type=float, default=1000.0, help="readings/s over all devices")
    parser.add_argument("--devices", type=int, default=10)
    args = parser.parse_args()
    manifest = load_bundle(args.bundle).manifest
    table = read_table(args.data)
    rows = table.values[:, [table.channels.index(c) for c in manifest.channels]]
    source = f"its generator ({manifest.generator['kind']})" if manifest.generator else "its golden windows"
    print(f"bundle {manifest.model_id} {manifest.model_version}, window {manifest.window}, stride {manifest.stride};")
    print(f"self-test on {source}; {args.rate:.0f} readings/s over {args.devices} devices, {args.seconds:.0f} s phases")
    print()
    print("| self-test | round | windows scored | p50 ms | p99 ms | max ms | self-tests run |")
    print("|---|---|---|---|---|---|---|")
    with start_broker() as broker:
        for r in range(args.rounds):
            for selftest in (False, True):
                res = one_phase(broker, args.bundle, rows, args, selftest)
                print(
                    f"| {'running' if selftest else 'off'} | {r + 1} | {res['windows']:,} | {res['p50']:.2f} | "
                    f"{res['p99']:.2f} | {res['max']:.1f} | {res['self_tests'] if selftest else ''} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
