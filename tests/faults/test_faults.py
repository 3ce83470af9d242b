"""The agent against the faults of the field, with a real mosquitto and the real agent process: the broker
killed and restarted during faults, the agent killed and restarted during an open alert, alerts caught
unacknowledged by a kill, and a 20 s partition. Counted by alert id: every alert the agent raised reaches
the operator (duplicates allowed, losses not) and every alert is ended.

`EDGEVAE_FAULTS_SCALE=full` (make faults) runs longer streams; the default is the quick scale `make test` runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_fixtures import CHANNELS, PERIOD_S, T0, WINDOW, Collector, Names, batched_payloads, stream
from agent_probe import scale, write_figures
from rig import (
    AgentProcess,
    KillableBroker,
    Operator,
    SensorFeed,
    agent_process,
    cable,
    killable_broker,
    wait_until,
)

from edgevae.demo.broker import Broker

PER_MESSAGE = 4  # readings per message
FAULT_ROWS = 40  # a fault lasts this many readings: about nine anomalous windows at window 8, stride 4


@pytest.fixture
def names() -> Names:
    tag = uuid.uuid4().hex[:8]
    return Names(root=f"plant-{tag}", prefix=f"edgevae-{tag}", agent_id=f"agent-{tag}")


@pytest.fixture
def broker_box(tmp_path: Path) -> Iterator[KillableBroker]:
    with killable_broker(tmp_path / "broker") as broker:
        yield broker


def latest_stats(collector: Collector, names: Names) -> dict[str, Any] | None:
    found = collector.on(names.stats)
    return found[-1].json() if found else None


def wait_stats(collector: Collector, names: Names, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        stats = latest_stats(collector, names)
        return stats if stats is not None and predicate(stats) else None

    found: dict[str, Any] = wait_until(check, timeout, what)
    return found


def assert_every_alert_delivered_and_ended(agent: AgentProcess, operator: Operator) -> dict[str, int]:
    """The suite's invariant: raised = received (by id), every received alert ended; returns the tallies."""
    raised = set(agent.raised())
    received = operator.by_id()
    lost = raised - set(received)
    assert not lost, f"alerts raised but never received: {sorted(lost)}\n{agent.text()[-3000:]}"
    unended = [i for i, types in received.items() if "end" not in types]
    assert not unended, f"alerts received without their end: {unended}"
    opened = [i for i, types in received.items() if "alert" in types]
    assert set(opened) == raised, "the operator saw an alert the agent's log never raised"
    messages = sum(len(t) for t in received.values())
    return {
        "alerts_raised": len(raised),
        "alerts_received": len(opened),
        "alerts_lost": len(lost),
        "messages_received": messages,
        "duplicates": messages - 2 * len(received),
        "agent_runs": agent.runs,
    }


def fault_plan(devices: int, rows: int, every: int) -> dict[str, list[tuple[int, int]]]:
    """(start, end) rows of the faults on each device, staggered so that some fault is always under way."""
    plan: dict[str, list[tuple[int, int]]] = {}
    for d in range(devices):
        offset = 30 + d * every // devices
        plan[f"pump-{d}"] = [(s, s + FAULT_ROWS) for s in range(offset, rows - FAULT_ROWS - 20, every)]
    return plan


def device_values(rows: int, faults: list[tuple[int, int]], seed: int) -> np.ndarray:
    values = stream(rows, phase=float(seed))
    normal = stream(rows, phase=float(seed))
    for k, (start, end) in enumerate(faults):
        channel = CHANNELS[k % len(CHANNELS)]
        values[start:end] = stream(rows, (channel, start, end), phase=float(seed))[start:end]
    assert values.shape == normal.shape
    return values


def assert_no_fault_missed(plan: dict[str, list[tuple[int, int]]], operator: Operator) -> None:
    """Each fault has an alert whose start falls inside it (or within one window after)."""
    starts: dict[str, list[float]] = {}
    for alert in operator.alerts():
        if alert["type"] == "alert":
            starts.setdefault(alert["device"], []).append(alert["started"])
    for device, faults in plan.items():
        for start, end in faults:
            lo, hi = T0 + start * PERIOD_S, T0 + (end + WINDOW) * PERIOD_S
            assert any(lo <= s <= hi for s in starts.get(device, [])), f"fault {start}-{end} on {device} missed"


class Feeder:
    """Publishes every device's stream row by row in real time (`rows_per_s`), calling `at(row)` hooks."""

    def __init__(self, feed: SensorFeed, streams: dict[str, np.ndarray], rows_per_s: float) -> None:
        self.feed = feed
        self.payloads = {
            device: batched_payloads(values, T0, per_message=PER_MESSAGE) for device, values in streams.items()
        }
        self.rows_per_s = rows_per_s

    def run(self, hooks: dict[int, Any]) -> None:
        """Publish everything; each hook runs in its own thread when its row comes, so that the sensors keep
        publishing through the fault it makes."""
        messages = len(next(iter(self.payloads.values())))
        threads: list[threading.Thread] = []
        t0 = time.monotonic()
        for m in range(messages):
            row = m * PER_MESSAGE
            for r in range(row, row + PER_MESSAGE):
                if r in hooks:
                    threads.append(threading.Thread(target=hooks[r], name=f"fault-at-{r}"))
                    threads[-1].start()
            for device, payloads in self.payloads.items():
                self.feed.send(device, [payloads[m]], PER_MESSAGE)
            delay = t0 + (row + PER_MESSAGE) / self.rows_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for thread in threads:
            thread.join()


# --- deterministic faults ------------------------------------------------------------------------------------


def test_readings_sent_while_the_agent_is_down_are_scored_after_it_restarts(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names
) -> None:
    """A persistent session: the broker keeps the agent's subscription and queues its QoS 1 readings."""
    collector = Collector(broker, [names.stats])
    feed = SensorFeed(broker, names)
    values = stream(400)
    payloads = batched_payloads(values, T0, per_message=PER_MESSAGE)
    with agent_process(tmp_path / "agent", broker, bundle, names) as agent:
        agent.wait_connected()
        feed.send("pump-0", payloads[:25], PER_MESSAGE)
        wait_stats(collector, names, lambda s: s["readings"] == 100, 20, "the first 100 readings scored")
        agent.kill()
        feed.send("pump-0", payloads[25:], PER_MESSAGE)
        wait_until(feed.all_acknowledged, 10, "the broker to take the readings")
        agent.start()
        stats = wait_stats(collector, names, lambda s: s["readings"] >= 300, 30, "the queued readings scored")
    assert stats["readings"] == 300, "every reading published while the agent was down is scored once"
    assert "resumed its session" in agent.text()
    feed.close()
    collector.close()


def test_an_open_alert_continues_under_its_id_after_kill_9(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names
) -> None:
    operator = Operator(broker, names.prefix, f"operator-{names.agent_id}")
    collector = Collector(broker, [names.stats])
    feed = SensorFeed(broker, names)
    values = stream(400, ("temp", 100, 300))
    payloads = batched_payloads(values, T0, per_message=PER_MESSAGE)
    with agent_process(tmp_path / "agent", broker, bundle, names) as agent:
        agent.wait_connected()
        feed.send("pump-0", payloads[:50], PER_MESSAGE)  # 200 readings: well into the fault
        wait_until(lambda: operator.by_id(), 20, "the alert")
        wait_stats(collector, names, lambda s: s["readings"] == 200, 20, "200 readings scored")
        agent.kill()
        agent.start()
        agent.wait_connected()
        feed.send("pump-0", payloads[50:], PER_MESSAGE)  # the fault goes on, then clears
        wait_until(lambda: any("end" in t for t in operator.by_id().values()), 30, "the end")
        time.sleep(0.5)  # a second alert, if one were raised, would come with the end
    by_id = operator.by_id()
    assert len(by_id) == 1, f"one fault, one alert id across the restart: {by_id}"
    ((alert_id, types),) = by_id.items()
    assert types.count("alert") >= 1
    assert "end" in types
    assert agent.continued() == [alert_id], "the restarted agent took the open alert up"
    assert agent.raised() == [alert_id]
    end = next(a for a in operator.alerts() if a["type"] == "end")
    assert end["reason"] == "cleared"
    assert end["ended"] > T0 + 300 * PERIOD_S
    for c in (operator, collector, feed):
        c.close()


def test_an_alert_unacknowledged_at_kill_9_is_delivered_after_the_restart(
    tmp_path: Path, broker: Broker, bundle: Path, names: Names
) -> None:
    """The alert is raised while the agent's packets no longer reach the broker (readings still reach the
    agent); the agent is then killed. Before the outbox it lived only in paho's memory."""
    operator = Operator(broker, names.prefix, f"operator-{names.agent_id}")
    feed = SensorFeed(broker, names)
    values = stream(200, ("flow", 60, 200))
    payloads = batched_payloads(values, T0, per_message=PER_MESSAGE)
    with cable(broker) as link, agent_process(tmp_path / "agent", link.broker, bundle, names) as agent:
        agent.wait_connected()
        feed.send("pump-0", payloads[:10], PER_MESSAGE)
        time.sleep(1.0)
        link.hold_upstream()
        feed.send("pump-0", payloads[10:], PER_MESSAGE)
        wait_until(agent.raised, 20, "the agent to raise the alert")
        time.sleep(0.5)
        agent.kill()
        assert operator.by_id() == {}, "the broker never saw the alert"
        link.cut()
        link.mend()
        agent.start()
        wait_until(lambda: operator.by_id(), 30, "the alert from the outbox")
    assert list(operator.by_id()) == agent.raised()[:1]
    for c in (operator, feed):
        c.close()


# --- faults under load ----------------------------------------------------------------------------------------


def run_stream(
    tmp_path: Path, broker: KillableBroker | Broker, agent_broker: Broker, names: Names, bundle: Path,
    hooks_at: dict[float, Any], seconds: float, **agent_sections: dict[str, Any],
) -> tuple[AgentProcess, Operator, dict[str, list[tuple[int, int]]], int]:  # fmt: skip
    target = broker.broker if isinstance(broker, KillableBroker) else broker
    rows_per_s = 50.0
    rows = int(seconds * rows_per_s) // PER_MESSAGE * PER_MESSAGE
    plan = fault_plan(devices=4, rows=rows, every=160)
    streams = {device: device_values(rows, faults, k) for k, (device, faults) in enumerate(plan.items())}
    operator = Operator(target, names.prefix, f"operator-{names.agent_id}")
    feed = SensorFeed(target, names)
    hooks = {int(frac * rows) // PER_MESSAGE * PER_MESSAGE: hook for frac, hook in hooks_at.items()}
    agent = AgentProcess(tmp_path / "agent", agent_broker, bundle, names, **agent_sections)
    agent.start()
    try:
        agent.wait_connected()
        Feeder(feed, streams, rows_per_s).run(hooks)
        wait_until(feed.all_acknowledged, 60, "the broker to take every reading")
        wait_until(lambda: set(agent.raised()) <= set(agent.ended()), 60, "every alert to end")
        wait_until(lambda: set(agent.raised()) <= set(operator.by_id()), 60, "every alert to reach the operator")
        wait_until(lambda: all("end" in t for t in operator.by_id().values()), 60, "every end to reach the operator")
        assert agent.alive(), agent.text()[-3000:]
        assert "Traceback" not in agent.text()
    finally:
        if agent.alive():
            agent.stop()
        feed.close()
        operator.close()
    return agent, operator, plan, feed.readings


def test_the_broker_killed_and_restarted_during_faults(
    tmp_path: Path, broker_box: KillableBroker, bundle: Path, names: Names
) -> None:
    seconds = 60.0 if scale() == "full" else 20.0
    kills = 3 if scale() == "full" else 1
    downtime_s = 3.0
    hooks: dict[float, Any] = {}
    for k in range(kills):

        def outage() -> None:
            broker_box.kill()
            time.sleep(downtime_s)
            broker_box.start()

        hooks[(k + 1) / (kills + 1)] = outage
    agent, operator, plan, readings = run_stream(tmp_path, broker_box, broker_box.broker, names, bundle, hooks, seconds)
    figures = assert_every_alert_delivered_and_ended(agent, operator)
    assert_no_fault_missed(plan, operator)
    write_figures(
        f"broker-kill-{scale()}",
        {**figures, "broker_kills": kills, "downtime_s": downtime_s, "readings_sent": readings,
         "faults": sum(len(f) for f in plan.values())},
    )  # fmt: skip


def test_a_20_s_partition_between_agent_and_broker(tmp_path: Path, broker: Broker, bundle: Path, names: Names) -> None:
    """The cable is cut for 20 s while sensors keep publishing to the broker: the broker queues their readings
    for the agent's session, alerts raised after the reconnect all arrive, and no reading is lost."""
    collector = Collector(broker, [names.stats])
    with cable(broker) as link:

        def partition() -> None:
            link.cut()
            time.sleep(20.0)
            link.mend()

        agent, operator, plan, readings = run_stream(
            tmp_path, broker, link.broker, names, bundle, {0.3: partition}, 60.0 if scale() == "full" else 30.0
        )
    figures = assert_every_alert_delivered_and_ended(agent, operator)
    assert_no_fault_missed(plan, operator)
    scored = [m.json()["readings"] for m in collector.on(names.stats)]
    collector.close()
    assert max(scored) == readings, "every reading sent during the partition was scored"
    write_figures(
        f"partition-{scale()}",
        {**figures, "partition_s": 20.0, "readings_sent": readings, "faults": sum(len(f) for f in plan.values())},
    )


def test_the_broker_paused_for_20_s(tmp_path: Path, broker_box: KillableBroker, bundle: Path, names: Names) -> None:
    """SIGSTOP: connections stay open but nothing answers; with a 5 s keepalive the agent gives up on the
    connection, retries against a broker that accepts and never answers, and recovers when it resumes."""

    def pause() -> None:
        broker_box.pause()
        time.sleep(20.0)
        broker_box.resume()

    agent, operator, plan, _ = run_stream(
        tmp_path, broker_box, broker_box.broker, names, bundle, {0.3: pause},
        60.0 if scale() == "full" else 30.0, mqtt={"keepalive": 5},
    )  # fmt: skip
    figures = assert_every_alert_delivered_and_ended(agent, operator)
    assert_no_fault_missed(plan, operator)
    write_figures(f"broker-pause-{scale()}", {**figures, "pause_s": 20.0, "faults": sum(len(f) for f in plan.values())})
