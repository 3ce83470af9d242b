"""`edgevae alerts` against a real agent on a real mosquitto: what is open now from the retained states, then
the alerts and ends as they come, filtered; and the table as a terminal shows it."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from agent_fixtures import Collector, Names, Publisher, batched_payloads, stream

from edgevae.demo.broker import Broker, free_port
from edgevae.export.alert_feed import AlertBoard, Filter

ROWS = 120
OPEN_FAULT = ("pressure", 60, ROWS)
CLOSED_FAULT = ("flow", 40, 70)


def edgevae(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgevae.cli.main", *args]


class Following:
    """`edgevae alerts ARGS` running, its stdout read line by line on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            edgevae("alerts", *args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def read(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                got.append(json.loads(self.lines.get(timeout=max(0.01, deadline - time.monotonic()))))
            except queue.Empty:
                raise AssertionError(f"got {len(got)} of {n} lines: {got}") from None
        return got


@contextmanager
def following(*args: str) -> Iterator[Following]:
    tool = Following(*args)
    try:
        yield tool
    finally:
        tool.proc.terminate()
        tool.proc.communicate(timeout=10)  # closes the pipes


def open_alert(run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher) -> str:
    """An agent with an alert open on `pump`; returns its id."""
    run_agent(mqtt={"state_interval_s": 0.0})
    collector.wait_payload(names.status, b"online")
    publisher.send(names.data("pump"), batched_payloads(stream(ROWS, fault=OPEN_FAULT)))
    state = collector.latest_json(names.state("pump"), lambda s: s["state"] == "anomalous", timeout=20)
    return str(state["alert"]["id"])


def test_once_prints_what_is_open_now(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, broker: Broker
) -> None:
    alert_id = open_alert(run_agent, collector, names, publisher)
    common = ["--mqtt", broker.url, "--prefix", names.prefix, "--once", "--wait", "1"]
    out = subprocess.run(edgevae("alerts", *common, "--json"), capture_output=True, text=True, timeout=60, check=True)
    [line] = [json.loads(x) for x in out.stdout.splitlines()]
    assert (line["event"], line["device"], line["alert_id"], line["retained"]) == ("open", "pump", alert_id, True)
    assert line["top_channels"][0]["channel"] == "pressure"
    table = subprocess.run(edgevae("alerts", *common), capture_output=True, text=True, timeout=60, check=True).stdout
    assert "pump" in table
    assert "OPEN" in table
    assert table.rstrip().endswith("1 open, 0 ended shown")
    for flags in (["--device", "valve*"], ["--since", "2099-01-01"], ["--agent", "nobody"]):
        out = subprocess.run(edgevae("alerts", *common, "--json", *flags), capture_output=True, text=True, timeout=60)
        assert out.stdout == "", flags


def test_following_starts_with_what_is_open_then_tails_alerts_and_ends(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, broker: Broker
) -> None:
    alert_id = open_alert(run_agent, collector, names, publisher)
    common = ["--mqtt", broker.url, "--prefix", names.prefix, "--json"]
    with following(*common) as every, following(*common, "--device", "v*", "--device", "pump", "--open") as opens:
        assert every.read(1)[0]["alert_id"] == alert_id  # open before the tool started
        assert opens.read(1)[0]["alert_id"] == alert_id  # and this one is subscribed too
        publisher.send(names.data("valve"), batched_payloads(stream(ROWS, fault=CLOSED_FAULT)))
        opened, ended = every.read(2)
        assert (opened["event"], opened["device"]) == ("open", "valve")
        assert (ended["event"], ended["device"], ended["alert_id"]) == ("end", "valve", opened["alert_id"])
        assert ended["reason"] == "cleared"
        [only] = opens.read(1)
        assert (only["event"], only["device"]) == ("open", "valve")
        assert "retained" not in only


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--since", "yesterday"], "--since: expected a duration such as 30m, 2h or 1d, or an ISO 8601 time"),
        (["--mqtt", "http://x"], "--mqtt must be mqtt://host[:port] or mqtts://host[:port]"),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], error: str) -> None:
    base = ["--mqtt", f"mqtt://127.0.0.1:{free_port()}"]
    out = subprocess.run(edgevae("alerts", *base, *args), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert error in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_broker_is_a_one_line_error() -> None:
    out = subprocess.run(
        edgevae("alerts", "--mqtt", f"mqtt://127.0.0.1:{free_port()}"), capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "cannot reach the broker at mqtt://127.0.0.1" in out.stderr
    assert "Traceback" not in out.stderr


def test_on_a_terminal_it_is_a_live_table(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher, broker: Broker
) -> None:
    open_alert(run_agent, collector, names, publisher)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        edgevae("alerts", "--mqtt", broker.url, "--prefix", names.prefix),
        stdin=follower, stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    os.close(follower)
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while b"1 open" not in screen:
            assert time.monotonic() < deadline, screen
            if select.select([leader], [], [], 0.5)[0]:
                screen += os.read(leader, 65536)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(leader)
    last = screen.decode().rsplit("\x1b[2J", 1)[-1]
    assert last.splitlines()[0].split() == [
        "agent",
        "device",
        "state",
        "since",
        "score",
        "peak",
        "top",
        "channels",
        "ack",
    ]
    assert "pressure" in last


def test_the_board_keeps_acknowledgements_and_forgets_cleared_alerts() -> None:
    board = AlertBoard("p", Filter())
    state = {
        "state": "anomalous",
        "score": 2.5,
        "alert": {"id": "a1", "started": 100.0, "score": 2.0, "peak_score": 3.0, "top_channels": []},
        "acknowledged": None,
    }
    topic = "p/v1/edge-1/devices/pump/state"
    assert [e["event"] for e in board.apply(topic, json.dumps(state).encode(), retained=True)] == ["open"]
    assert board.open["edge-1", "pump"].score == 2.5  # the latest score, not the one the alert opened with
    acked = {**state, "acknowledged": {"by": "ana", "time": 120.0, "alert_id": "a1"}}
    assert [e["event"] for e in board.apply(topic, json.dumps(acked).encode())] == ["acknowledged"]
    higher = {**acked, "score": 4.0, "alert": {**state["alert"], "peak_score": 4.0}}  # type: ignore[dict-item]
    assert board.apply(topic, json.dumps(higher).encode()) == []
    assert board.open["edge-1", "pump"].peak_score == 4.0
    assert board.apply(topic, b"") == []  # the agent stopped cleanly: the alert stays open
    assert "ana" in board.table(now=200.0)
    assert board.apply(topic, json.dumps({"state": "normal"}).encode()) == []
    assert board.open == {}
    assert board.apply("p/v1/edge-1/devices/pump/alert", b"not json") == []
    assert board.apply("other/topic", b"{}") == []
