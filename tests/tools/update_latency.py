"""Publish-to-committed time of a release on one device, over HTTP and over the MQTT mirror (5 runs each).

    .venv/bin/python tests/tools/update_latency.py

The agent runs in this process against a throwaway broker with shadow and probation set to 0, so the
figure is the update machinery itself (verify, download, stage, self-test, swap); with the defaults a
release also spends `updates.shadow_s` (10 min) in shadow and `updates.probation_s` (1 h) in probation.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="edgevae-state-")

from agent_fixtures import Collector, Names, Publisher, agent_document, batched_payloads, make_bundle, stream

from edgevae.agent.config_file import load_config
from edgevae.agent.service import Service
from edgevae.demo.broker import Broker, start_broker
from edgevae.export.repo_mirror import mirror
from edgevae.export.repo_publish import publish
from edgevae.export.repository import init

RUNS = 5


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def one_run(broker: Broker, transport: str) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="edgevae-update-"))
    init(tmp / "repo")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp / "repo")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tag = uuid.uuid4().hex[:8]
    names = Names(root=f"plant-{tag}", prefix=f"edgevae-{tag}", agent_id=f"agent-{tag}")
    updates: dict[str, Any] = {
        "trusted_root": str(tmp / "repo" / "metadata" / "1.root.json"), "transport": transport, "group": "canary",
        "poll_s": 1.0, "shadow_s": 0.0, "shadow_min_windows": 20, "probation_s": 0.0,
    }  # fmt: skip
    if transport == "http":
        updates["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    service = Service(load_config(agent_document(broker, make_bundle(tmp / "v1"), names, updates=updates)))
    stop, halt = threading.Event(), threading.Event()
    agent = threading.Thread(target=service.run, args=(stop,), daemon=True)
    agent.start()
    collector, publisher = Collector(broker, [f"{names.prefix}/#"]), Publisher(broker)
    collector.wait_payload(names.status, b"online", 20)

    def feed() -> None:
        for payload in batched_payloads(stream(20_000), per_message=4):
            if halt.is_set():
                return
            publisher.send(names.data("pump-1"), payload)
            halt.wait(0.005)

    threading.Thread(target=feed, daemon=True).start()
    time.sleep(1.5)  # the first, empty repository check is behind it
    started = time.perf_counter()
    publish(tmp / "repo", make_bundle(tmp / "v2", model_version="2.0.0"), fleet=["canary"])
    if transport == "mqtt":
        mirror(tmp / "repo", broker.url, prefix=names.prefix)
    topic = names.agent_topic("update")
    collector.latest_json(topic, lambda u: u["step"] == "committed", 60)
    seconds = time.perf_counter() - started
    halt.set()
    stop.set()
    agent.join(10)
    collector.close()
    publisher.close()
    server.shutdown()
    return seconds


def main() -> int:
    with start_broker() as broker:
        for transport in ("http", "mqtt"):
            runs = [one_run(broker, transport) for _ in range(RUNS)]
            shown = ", ".join(f"{r:.2f}" for r in runs)
            print(f"{transport}: publish to committed, median {statistics.median(runs):.2f} s ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
