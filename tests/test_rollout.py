"""`edgevae rollout` and `edgevae fleet status` against real agents on a real mosquitto: canaries first,
promotion once they commit, a halt that names the canary and its reason, and a fleet table."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import Collector, Names, Publisher, batched_payloads, make_bundle, stream

from edgevae.agent.topics import Topics
from edgevae.core.errors import ExportError
from edgevae.demo.broker import Broker
from edgevae.export.fleet import fleet_status, status_table
from edgevae.export.repo_publish import releases
from edgevae.export.repo_store import load_current, open_repository
from edgevae.export.rollout import rollout

FAST = {"transport": "mqtt", "poll_s": 0.5, "shadow_s": 1.0, "shadow_min_windows": 20, "probation_s": 0.0}


@pytest.fixture
def fleet(repo: Path, run_agent: Callable[..., Any], names: Names) -> dict[str, Any]:
    """Two canaries and one fleet device, all scoring the same sensor stream."""
    agents = {}
    for agent, group in (("canary-1", "canary"), ("canary-2", "canary"), ("fleet-1", "fleet")):
        updates = {"trusted_root": str(repo / "metadata" / "1.root.json"), "group": group, **FAST}
        agents[agent] = run_agent(mqtt={"client_id": f"{names.agent_id}-{agent}"}, updates=updates)
    return agents


@pytest.fixture
def readings(publisher: Publisher, names: Names) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        for payload in batched_payloads(stream(40_000), per_message=4):
            if stop.is_set():
                return
            publisher.send(names.data("pump-1"), payload)
            stop.wait(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def fleet_releases(repo: Path) -> list[int]:
    listed = releases(load_current(open_repository(repo)).targets.signed)
    return sorted(r.release for path, r in listed.items() if "fleet" in r.fleet and path.startswith("channels/"))


def test_a_rollout_promotes_once_every_canary_committed(
    tmp_path: Path, repo: Path, broker: Broker, names: Names, fleet: dict[str, Any], readings: None,
) -> None:  # fmt: skip
    result = rollout(
        repo, make_bundle(tmp_path / "v2", model_version="2.0.0"), "canary", "fleet", broker.url, names.prefix,
        canary_devices=2, timeout_s=60,
    )  # fmt: skip
    assert result.canaries == {f"{names.agent_id}-canary-1": "committed", f"{names.agent_id}-canary-2": "committed"}
    assert (result.canary_release, result.fleet_release) == (1, 2)
    assert fleet_releases(repo) == [2]
    update_topic = Topics(names.prefix, f"{names.agent_id}-fleet-1").agent_topic("update")
    collector = Collector(broker, [update_topic])
    collector.latest_json(update_topic, lambda u: u["step"] == "committed" and u["release"] == 2, 30)
    collector.close()
    table = status_table(fleet_status(broker.url, names.prefix, wait_s=1.0))
    rows = [line for line in table.splitlines() if names.agent_id in line]
    assert len(rows) == 3
    assert all("tiny-zscore 2.0.0" in row and "committed" in row for row in rows), table


def test_a_rollout_halts_when_a_canary_refuses_the_release(
    tmp_path: Path, repo: Path, broker: Broker, names: Names, fleet: dict[str, Any], readings: None,
) -> None:  # fmt: skip
    bad = make_bundle(tmp_path / "v2", model_version="2.0.0", threshold=0.01)  # alerts on every window
    # The canary's detection self-test refuses it before shadow (a release that passed it and failed shadow
    # halts the same way, "rolled_back: shadow: ...").
    halted = r"rollout halted: canary .*-canary-\d rejected: detection self-test: flags 100% of 4 normal golden"
    with pytest.raises(ExportError, match=halted):
        rollout(repo, bad, "canary", "fleet", broker.url, names.prefix, canary_devices=2, timeout_s=60)
    assert fleet_releases(repo) == [], "the fleet pointer was never published"
    assert fleet["fleet-1"].manifest.model_version == "1.0.0"
