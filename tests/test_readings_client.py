"""The readings over libmosquitto on a connection of their own, paho where it is asked for or libmosquitto
does not load, and the move from one to the other with a session the broker kept."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import Collector, Names, Publisher, agent_document, batched_payloads, stream, windows_for

from edgevae.agent import libmosquitto
from edgevae.agent.config import MqttConfig
from edgevae.agent.config_file import load_config
from edgevae.agent.readings_client import CLIENT_SUFFIX, open_readings
from edgevae.agent.service import Service
from edgevae.core.errors import ConfigError
from edgevae.demo.broker import Broker

ROWS = 60


@pytest.mark.parametrize(("client", "per_message"), [("libmosquitto", 1), ("libmosquitto", 8), ("paho", 1)])
def test_each_readings_client_scores_every_reading(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher,
    client: str, per_message: int,
) -> None:  # fmt: skip
    service = run_agent(mqtt={"readings_client": client})
    collector.wait_payload(names.status, b"online")
    publisher.send(names.data("a"), batched_payloads(stream(ROWS), per_message=per_message))
    stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == windows_for(ROWS))
    assert stats["readings"] == ROWS
    if client == "libmosquitto":
        assert service.readings_link is not None
        assert service.readings_link.client_id == names.agent_id + CLIENT_SUFFIX
        assert service.readings_link.is_connected()
        assert not service.link.readings, "the main link does not subscribe to them as well"
    else:
        assert service.readings_link is None


@pytest.fixture
def agent_runs(broker: Broker, bundle: Path, names: Names) -> Iterator[Callable[..., Callable[[], None]]]:
    """Start the agent in a thread: start(readings_client) -> stop()."""
    running: list[Callable[[], None]] = []

    def start(readings_client: str) -> Callable[[], None]:
        doc = agent_document(broker, bundle, names, mqtt={"readings_client": readings_client})
        service = Service(load_config(doc))
        stop = threading.Event()
        thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(15)
            assert not thread.is_alive()

        running.append(halt)
        return halt

    yield start
    for halt in running:
        halt()


def test_readings_queued_in_a_paho_session_are_scored_once_after_the_move(
    agent_runs: Callable[..., Callable[[], None]], collector: Collector, names: Names, publisher: Publisher
) -> None:
    """An agent that ran with paho left a session subscribed to the readings: what the broker queued there
    while it was away is scored, and from then on each reading arrives once, on the new connection."""
    halt = agent_runs("paho")
    collector.wait_payload(names.status, b"online")
    halt()
    publisher.send(names.data("a"), batched_payloads(stream(ROWS)))  # queued in the paho session
    agent_runs("libmosquitto")
    collector.latest_json(names.stats, lambda s: s["readings"] == ROWS)
    publisher.send(names.data("b"), batched_payloads(stream(ROWS)))
    stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == 2 * windows_for(ROWS))
    assert stats["readings"] == 2 * ROWS
    assert sum(stats["dropped"].values()) == 0, "no reading came twice"


def unavailable() -> Any:
    msg = "libmosquitto >= 2.0 is not available (test)"
    raise libmosquitto.LibraryUnavailable(msg)


def test_auto_falls_back_to_paho_and_a_named_client_must_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(libmosquitto, "load", unavailable)

    def deliver(topic: str, payload: bytes) -> None:
        raise AssertionError

    with caplog.at_level(logging.INFO):
        assert open_readings(MqttConfig(), "agent", None, None, deliver, lambda: True) is None
    assert "readings over paho: libmosquitto >= 2.0 is not available" in caplog.text
    with pytest.raises(ConfigError, match=r"mqtt.readings_client = 'libmosquitto': libmosquitto >= 2.0"):
        open_readings(MqttConfig(readings_client="libmosquitto"), "agent", None, None, deliver, lambda: True)
    assert open_readings(MqttConfig(readings_client="paho"), "agent", None, None, deliver, lambda: True) is None


def test_a_missing_library_is_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libmosquitto, "_library", None)
    monkeypatch.setattr(libmosquitto.ctypes.util, "find_library", lambda name: "libmosquitto-missing.so.9")
    with pytest.raises(libmosquitto.LibraryUnavailable, match="apt install libmosquitto1"):
        libmosquitto.load()
