"""The agent over a real mosquitto: status, stats, alerts for a faulty device only, last will, clean stop."""

from __future__ import annotations

import queue
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import (
    CHANNELS,
    Collector,
    Message,
    Names,
    Publisher,
    agent_document,
    agent_process,
    batched_payloads,
    stream,
    timestamps,
    to_toml,
    windows_for,
)

from edgevae.agent.config import MqttConfig
from edgevae.agent.mqtt import MqttLink
from edgevae.agent.offline import score_table
from edgevae.agent.replay import replay
from edgevae.agent.table import read_table
from edgevae.agent.topics import Topics
from edgevae.demo.broker import Broker, free_port

ROWS = 120


def alerts(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/alert")]


def test_online_is_retained_and_stats_are_published(
    run_agent: Callable[..., Any], collector: Collector, names: Names, broker: Broker
) -> None:
    run_agent()
    collector.wait_payload(names.status, b"online")
    collector.latest_json(names.stats, lambda s: True)
    late = Collector(broker, [names.status, names.stats])  # subscribes after the fact: gets the retained ones
    try:
        assert late.wait_payload(names.status, b"online").retain
        stats = late.latest_json(names.stats, lambda s: True)
        assert late.on(names.stats)[0].retain
    finally:
        late.close()
    assert stats["schema"] == 1
    assert stats["agent"] == names.agent_id
    assert stats["model"] == {"id": "tiny-zscore", "version": "1.0.0", "backend": "onnxruntime-cpu"}
    expected = {"readings", "readings_per_s", "windows_scored", "alerts", "dropped", "uptime_s", "queue_depth"}
    assert expected <= set(stats)
    assert set(stats["dropped"]) >= {"oversized", "not_json", "bad_schema", "queue_full", "out_of_order"}


def test_normal_streams_raise_no_alert(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent()
    collector.wait_payload(names.status, b"online")
    for i, device in enumerate(("a", "b")):
        publisher.send(names.data(device), batched_payloads(stream(ROWS, phase=i)))
    total = 2 * windows_for(ROWS)
    stats = collector.latest_json(names.stats, lambda s: s["windows_scored"] == total)
    assert stats["readings"] == 2 * ROWS
    assert stats["alerts"] == 0
    assert sum(stats["dropped"].values()) == 0
    assert alerts(collector.messages) == []


def test_a_fault_on_one_device_raises_one_alert_then_its_end(
    run_agent: Callable[..., Any], collector: Collector, names: Names, publisher: Publisher
) -> None:
    run_agent()
    collector.wait_payload(names.status, b"online")
    streams = {
        "pump1": stream(ROWS, phase=0.0),
        "pump2": stream(ROWS, fault=("pressure", 40, 70), phase=1.0),
        "pump3": stream(ROWS, phase=2.0),
    }
    for device, values in streams.items():
        publisher.send(names.data(device), batched_payloads(values))
    total = len(streams) * windows_for(ROWS)
    collector.latest_json(names.stats, lambda s: s["windows_scored"] == total)
    got = collector.wait_for(lambda ms: len(alerts(ms)) >= 2 and alerts(ms), what="an alert and its end")
    assert [(a["type"], a["device"]) for a in got] == [("alert", "pump2"), ("end", "pump2")]
    opened, ended = got
    assert opened["top_channels"][0]["channel"] == "pressure"
    assert opened["id"] == ended["id"]
    assert {m.topic for m in collector.messages if m.topic.endswith("/alert")} == {names.alert("pump2")}
    stats = collector.latest_json(names.stats, lambda s: s["alerts"] == 1 and s["alerts_open"] == 0)
    assert stats["devices"] == 3


def test_replayed_csv_alerts_where_offline_scoring_says(
    run_agent: Callable[..., Any], collector: Collector, names: Names, broker: Broker, bundle: Path, tmp_path: Path
) -> None:
    values = stream(ROWS, fault=("temp", 50, 80))
    path = tmp_path / "faulty.csv"
    lines = ["timestamp," + ",".join(CHANNELS)]
    lines += [",".join(map(repr, [t, *row])) for t, row in zip(timestamps(ROWS).tolist(), values.tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    table = read_table(path)
    offline = score_table(bundle, table)
    flags = [r.is_anomaly for r in offline]
    opened_ts = table.timestamps[flags.index(True)]
    ended_ts = table.timestamps[flags.index(False, flags.index(True))]

    service = run_agent()
    collector.wait_payload(names.status, b"online")
    assert service.link.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert replay(table, broker.url, names.data("csv"), batch=8) == ROWS // 8
    got = collector.wait_for(lambda ms: len(alerts(ms)) >= 2 and alerts(ms), what="an alert and its end")
    assert [(a["type"], a["window_end"]) for a in got] == [("alert", opened_ts), ("end", ended_ts)]
    assert got[0]["top_channels"][0]["channel"] == "temp"


def test_service_notifies_systemd(
    run_agent: Callable[..., Any], names: Names, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        run_agent()
        first = sock.recv(4096)
        assert first.startswith(b"READY=1\nSTATUS=scoring tiny-zscore 1.0.0")
        seen = {sock.recv(4096).split(b"=")[0] for _ in range(6)}
        assert {b"WATCHDOG", b"STATUS"} <= seen
    finally:
        sock.close()


def _write_config(tmp_path: Path, broker: Broker, bundle: Path, names: Names) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names)))
    return config


def test_last_will_says_offline_when_the_agent_is_killed(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector
) -> None:
    with agent_process(_write_config(tmp_path, broker, bundle, names)) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        proc.kill()
        proc.wait(10)
    assert collector.wait_payload(names.status, b"offline").retain is False  # delivered live; retained for later
    late = Collector(broker, [names.status])
    try:
        assert late.wait_payload(names.status, b"offline").retain
    finally:
        late.close()


def test_sigterm_stops_cleanly(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector
) -> None:
    config = _write_config(tmp_path, broker, bundle, names)
    with agent_process(config) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    collector.wait_stopped(names)
    log = config.with_suffix(".log").read_text()
    assert "Traceback" not in log
    assert "received SIGTERM" in log
    reasons = [m.json()["reason"] for m in collector.on(names.offline_reason)]
    assert reasons == ["connection_lost", "stopped"]  # said before the offline: the last will was not sent


def test_sighup_reloads_in_place(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher
) -> None:
    """SIGHUP used to kill the agent with no clean stop; now it stops cleanly and starts again in the same
    process (what systemd's ExecReload expects), and scoring goes on."""
    config = _write_config(tmp_path, broker, bundle, names)
    with agent_process(config) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        proc.send_signal(signal.SIGHUP)
        collector.wait_stopped(names, reason="reloading")
        collector.wait_for(lambda ms: [m for m in ms if m.topic == names.status][-1].payload == b"online" or None, 30)
        assert proc.poll() is None  # the same process, reloaded
        publisher.send(names.data("pump"), batched_payloads(stream(60, fault=("flow", 20, 40))))
        got = collector.wait_for(lambda ms: [m.json() for m in ms if m.topic == names.alert("pump")] or None)
        assert got[0]["type"] == "alert"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    log = config.with_suffix(".log").read_text()
    assert "received SIGHUP" in log
    assert "reloading" in log
    assert "Traceback" not in log


def test_a_broker_that_is_not_there_is_said_once_a_minute(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names
) -> None:
    """Nothing listening used to log `connecting to ...` and then nothing at any level; now the cause is
    logged on the first failure and again at most once a minute, with the count."""
    doc = agent_document(broker, bundle, names, mqtt={"broker": f"mqtt://127.0.0.1:{free_port()}"})
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(doc))
    log = config.with_suffix(".log")
    with agent_process(config) as proc:
        deadline = time.monotonic() + 20
        while "cannot connect" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # paho retries every second or so meanwhile
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    text = log.read_text()
    lines = [line for line in text.splitlines() if "cannot connect" in line]
    assert len(lines) == 1, text
    assert "ConnectionRefusedError" in lines[0]
    assert "Traceback" not in text


def test_the_link_records_why_it_is_down(broker: Broker) -> None:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    link = MqttLink(MqttConfig(broker=f"mqtt://127.0.0.1:{free_port()}"), Topics("edgevae", "edge-1"), inbox)
    link.start()
    try:
        deadline = time.monotonic() + 10
        while not link.connect_failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.connect_failures >= 1
        assert link.last_error.startswith("ConnectionRefusedError")
        assert not link.connected.is_set()
    finally:
        link.stop()


def test_a_backlog_larger_than_the_queue_is_scored_not_dropped(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names, collector: Collector, publisher: Publisher
) -> None:
    """An agent that falls behind (here: stopped while 1,000 readings arrive for it) used to read the backlog
    at the broker's speed and drop what did not fit its queue (`queue_full`); now paho's thread waits for
    room, the broker holds the rest for the session, and every reading is scored."""
    config = tmp_path / "agent.toml"
    config.write_text(to_toml(agent_document(broker, bundle, names, limits={"queue_size": 4})))
    rows, per_message = 1000, 5
    with agent_process(config) as proc:
        collector.wait_payload(names.status, b"online", timeout=30)
        collector.latest_json(names.stats, lambda s: True)
        proc.send_signal(signal.SIGSTOP)
        try:
            publisher.send(names.data("pump"), batched_payloads(stream(rows), per_message=per_message))
        finally:
            proc.send_signal(signal.SIGCONT)
        stats = collector.latest_json(
            names.stats,
            lambda s: s["dropped"]["queue_full"] > 0 or s["windows_scored"] == windows_for(rows),
            timeout=60,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert stats["dropped"]["queue_full"] == 0
    assert stats["readings"] == rows
    assert stats["windows_scored"] == windows_for(rows)
