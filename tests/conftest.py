"""Session fixtures: a real mosquitto on a free loopback port, a real tiny ONNX bundle, a run directory
written by `edgevae train`, and agents to test."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import (
    Collector,
    Names,
    Publisher,
    agent_document,
    make_bundle,
    static_server,
)
from trained_runs import train_run

from edgevae.agent.config import Config
from edgevae.agent.config_file import load_config
from edgevae.demo.broker import Broker, find_mosquitto, start_broker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test-fast` leaves out the slow tests; one that trains a run and is not marked slow would quietly
    put a training run back into it."""
    unmarked = [
        item.nodeid
        for item in items
        if "trained_run" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        msg = f"these tests use trained_run but are not marked slow: {', '.join(unmarked)}"
        raise pytest.UsageError(msg)


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Agents started by the tests (in this process or as children) keep their outbox under a temporary
    $XDG_STATE_HOME, one database per agent id, never in the user's home."""
    home = tmp_path_factory.mktemp("state")
    saved = {key: os.environ.get(key) for key in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
    os.environ["XDG_STATE_HOME"] = str(home)
    os.environ.pop("STATE_DIRECTORY", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(
            "mosquitto is not installed; the MQTT tests need a real broker. "
            "Run the README's test command, `make test`, which installs it (apt-get install mosquitto)."
        )
    with start_broker() as running:
        yield running


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conv VAE with the MSE decoder, trained once per session by `edgevae train` on the synthetic CSV."""
    return train_run(tmp_path_factory.mktemp("trained"), "--arch", "conv", "--likelihood", "mse")


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(broker)
    yield pub
    pub.close()


@pytest.fixture
def names() -> Names:
    tag = uuid.uuid4().hex[:8]
    return Names(root=f"plant-{tag}", prefix=f"edgevae-{tag}", agent_id=f"agent-{tag}")


@pytest.fixture
def collector(broker: Broker, names: Names) -> Iterator[Collector]:
    c = Collector(broker, [f"{names.prefix}/#"])
    yield c
    c.close()


@pytest.fixture
def run_agent(broker: Broker, bundle: Path, names: Names) -> Iterator[Callable[..., Any]]:
    """Start the agent in a thread of this process: run_agent(**sections) -> the running Service."""
    from edgevae.agent.service import Service

    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(**sections: dict[str, Any]) -> Service:
        config: Config = load_config(agent_document(broker, bundle, names, **sections))
        service = Service(config)
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), name="agent", daemon=True)
        thread.start()
        stops.append((stop, thread))
        return service

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the agent did not stop within 10 s"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A new signed model repository (`edgevae repo init`), private to the test."""
    from edgevae.export.repository import init

    init(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def served(repo: Path) -> Iterator[str]:
    """The repository on a static web server on a free loopback port; yields its base URL."""
    with static_server(repo) as url:
        yield url
