"""A kill -9 at any step of an update ends, after the restart, with the old model or the new one, never
none; a restart within probation rolls back; `edgevae-agent rollback` goes back by hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import (
    Collector,
    Names,
    Publisher,
    agent_document,
    agent_process,
    batched_payloads,
    make_bundle,
    static_server,
    stream,
    to_toml,
)

from edgevae.agent.__main__ import main
from edgevae.agent.model_store import Installed, ModelStore, UpdateState
from edgevae.demo.broker import Broker
from edgevae.export.repo_publish import publish
from edgevae.export.repository import init


def installed(tmp_path: Path, release: int) -> Installed:
    folder = tmp_path / "models" / str(release)
    folder.mkdir(parents=True, exist_ok=True)
    return Installed(release, str(folder), "m", f"{release}.0")


@pytest.mark.parametrize(
    ("step", "active_after", "refused"),
    [
        ("received", 1, [2]),
        ("verified", 1, [2]),
        ("staged", 1, [2]),
        ("shadow", 1, [2]),
        ("probation", None, [1]),  # the committed release 1 restarted within probation: back to the installed bundle
        ("committed", 1, []),
    ],
)
def test_a_restart_in_each_step_is_consistent(
    tmp_path: Path, step: str, active_after: int | None, refused: list[int]
) -> None:
    store = ModelStore(tmp_path)
    store.state = UpdateState(step=step, active=installed(tmp_path, 1))  # type: ignore[arg-type]
    if step in ("received", "verified", "staged", "shadow"):
        store.state.candidate = installed(tmp_path, 2)
    store.save()
    again = ModelStore(tmp_path)
    again.recover()
    active = again.state.active
    assert (active.release if active else None) == active_after
    assert again.state.refused == refused
    assert again.state.candidate is None
    assert ModelStore(tmp_path).state == again.state, "what recovery decided is on disk"


def test_a_model_folder_gone_falls_back(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.state = UpdateState(
        step="committed", active=Installed(3, str(tmp_path / "nowhere"), "m", "3"), previous=installed(tmp_path, 2)
    )
    store.save()
    again = ModelStore(tmp_path)
    assert "gone" in str(again.recover())
    assert again.state.active is not None
    assert again.state.active.release == 2


# --- the agent process ---------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    init(tmp_path / "repo")
    with static_server(tmp_path / "repo") as url:
        yield tmp_path / "repo", url


def config_file(tmp_path: Path, broker: Broker, names: Names, repo: tuple[Path, str], **updates: Any) -> Path:
    path, url = repo
    section = {
        "trusted_root": str(path / "metadata" / "1.root.json"), "transport": "http", "url": url, "group": "canary",
        "poll_s": 0.3, "shadow_s": 1.0, "shadow_min_windows": 10, "probation_s": 0.0, **updates,
    }  # fmt: skip
    doc = agent_document(
        broker, make_bundle(tmp_path / "v1"), names, updates=section, state={"directory": str(tmp_path / "state")}
    )
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(doc))
    return config


def update_of(collector: Collector, names: Names, step: str, timeout: float = 30.0) -> dict[str, Any]:
    topic = names.agent_topic("update")
    found: dict[str, Any] = collector.latest_json(topic, lambda u: u["step"] == step, timeout)
    return found


def version(collector: Collector, names: Names, expected: str, timeout: float = 30.0) -> None:
    collector.latest_json(names.stats, lambda s: s["model"]["version"] == expected, timeout)


def feed_until(publisher: Publisher, collector: Collector, names: Names, step: str, timeout: float = 30.0) -> None:
    """Publish a normal stream, paced, until the agent says `step` on its update topic."""
    topic = names.agent_topic("update")
    payloads = batched_payloads(stream(40_000), per_message=4)
    deadline = time.monotonic() + timeout
    for k in range(0, len(payloads), 10):
        if any(m.json()["step"] == step for m in collector.on(topic)):
            return
        if time.monotonic() > deadline:
            break
        publisher.send(names.data("pump-1"), payloads[k : k + 10])
        time.sleep(0.05)
    msg = f"the agent never said {step}; it said {[m.json()['step'] for m in collector.on(topic)]}"
    raise AssertionError(msg)


@pytest.mark.parametrize(("step", "probation_s", "shadow_s"), [("shadow", 0.0, 60.0), ("probation", 60.0, 1.0)])
def test_kill_9_during_an_update_restarts_on_a_model(
    tmp_path: Path, broker: Broker, names: Names, publisher: Publisher, repo: tuple[Path, str],
    step: str, probation_s: float, shadow_s: float,
) -> None:  # fmt: skip
    config = config_file(tmp_path, broker, names, repo, probation_s=probation_s, shadow_s=shadow_s)
    collector = Collector(broker, [f"{names.prefix}/#"])
    with agent_process(config) as proc:
        version(collector, names, "1.0.0")
        publish(repo[0], make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
        feed_until(publisher, collector, names, step)
        proc.kill()
        proc.wait(10)
    with agent_process(config):
        after = update_of(collector, names, "rolled_back")
        version(collector, names, "1.0.0")
        threading.Event().wait(1.5)  # polls come and go: the refused release is not taken again
    assert after["release"] == 1
    reason = (
        "restarted within the probation period" if step == "probation" else "restarted before the release was committed"
    )
    assert after["reason"] == reason
    ups = [m.json()["step"] for m in collector.on(names.agent_topic("update"))]
    assert ups[-1] == "rolled_back", ups
    collector.close()


def test_rollback_by_hand_on_a_running_agent(
    tmp_path: Path,
    broker: Broker,
    names: Names,
    publisher: Publisher,
    repo: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_file(tmp_path, broker, names, repo)
    collector = Collector(broker, [f"{names.prefix}/#"])
    payloads = batched_payloads(stream(2000), per_message=4)
    with agent_process(config):
        version(collector, names, "1.0.0")
        publish(repo[0], make_bundle(tmp_path / "v2", model_version="2.0.0"), fleet=["canary"])
        feed_until(publisher, collector, names, "committed")
        version(collector, names, "2.0.0")
        assert main(["rollback", "--config", str(config)]) == 0
        assert "asked the running agent" in capsys.readouterr().out
        publisher.send(names.data("pump-1"), payloads[-40:])
        rolled = update_of(collector, names, "rolled_back", 15)
        version(collector, names, "1.0.0")
    assert "by hand" in rolled["reason"]
    collector.close()
