"""The state database: one agent at a time, damage moved aside, the outbox in order and bounded, and open
alerts that read back as they were written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_fixtures import Collector, Names, agent_document, agent_process, make_bundle, to_toml

from edgevae.agent.bundle import load_bundle
from edgevae.agent.config import default_directory
from edgevae.agent.detector import OpenAlert, WindowResult
from edgevae.agent.outbox import Outbox
from edgevae.agent.state import SCHEMA_VERSION, StateError, StateStore, database_name
from edgevae.demo.broker import Broker


class RecordingLink:
    """The link side of the outbox, answering like paho: ids on publish, acknowledgements when told."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: list[tuple[int, str, bytes]] = []
        self.acks: list[tuple[int, str | None]] = []
        self.full = False
        self._mid = 0

    def is_connected(self) -> bool:
        return self.connected

    def publish_tracked(self, topic: str, payload: bytes, *, kind: str) -> int | None:
        if topic == "bad/#":
            msg = "Publish topic cannot contain wildcards."
            raise ValueError(msg)
        if self.full:
            return None
        self._mid += 1
        self.sent.append((self._mid, topic, payload))
        return self._mid

    def take_acks(self) -> list[tuple[int, str | None]]:
        acks, self.acks = self.acks, []
        return acks

    def ack_all(self, failure: str | None = None) -> None:
        self.acks += [(mid, failure) for mid, _, _ in self.sent]


def test_one_agent_at_a_time(tmp_path: Path) -> None:
    first = StateStore(tmp_path, "edge-1")
    with pytest.raises(StateError, match="in use by another agent"):
        StateStore(tmp_path, "edge-1")
    StateStore(tmp_path, "edge-2").close()  # another id, another database
    first.close()
    StateStore(tmp_path, "edge-1").close()


def test_an_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file"
        blocked.write_text("")  # a file where the directory should be: refused for root too
        where = blocked / "state"
    else:
        where = tmp_path / "ro"
        where.mkdir(mode=0o500)
    with pytest.raises(StateError, match="cannot be used") as info:
        StateStore(where, "edge-1")
    assert info.value.exit_code == 2


def test_a_damaged_database_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / database_name("edge-1")).write_bytes(b"not a database at all" * 100)
    with StateStore(tmp_path, "edge-1") as store:
        assert store.outbox_size() == (0, 0)
    assert len(list(tmp_path.glob("edge-1.sqlite3.corrupt-*"))) == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / database_name("edge-1"))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match="newer than this agent"):
        StateStore(tmp_path, "edge-1")


def test_the_database_is_private(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s", "edge-1") as store:
        assert (store.path.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "s").stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STATE_DIRECTORY": "/var/lib/edgevae:/var/lib/other"}, "/var/lib/edgevae"),
        ({"XDG_STATE_HOME": "/x"}, "/x/edgevae"),
        ({"HOME": "/home/u"}, None),  # ~/.local/state/edgevae of whoever runs the tests
    ],
)
def test_the_default_directory(env: dict[str, str], expected: str | None) -> None:
    got = str(default_directory(env))
    assert got == expected if expected else got.endswith(".local/state/edgevae")


# --- the outbox -------------------------------------------------------------------------------------------


OPENED: list[StateStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def opened(directory: Path, agent_id: str = "edge-1") -> StateStore:
    store = StateStore(directory, agent_id)
    OPENED.append(store)
    return store


def outbox(tmp_path: Path, max_bytes: int = 1 << 20) -> tuple[StateStore, Outbox, RecordingLink]:
    store = opened(tmp_path)
    link = RecordingLink()
    return store, Outbox(store, link, max_bytes), link


def add(box: Outbox, store: StateStore, *payloads: bytes, topic: str = "edgevae/d/alert") -> None:
    with store.transaction():
        for payload in payloads:
            box.add(topic, payload, "alert")


def test_messages_leave_in_order_and_only_an_ack_deletes_them(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    add(box, store, b"a", b"b", b"c")
    box.pump()
    assert [p for _, _, p in link.sent] == [b"a", b"b", b"c"]
    assert (box.depth, box.in_flight) == (3, 3)
    box.pump()
    assert len(link.sent) == 3, "a message in flight is not handed over twice"
    link.acks.append((1, None))
    box.pump()
    assert store.outbox_size()[0] == 2
    link.ack_all()
    box.pump()
    assert store.outbox_size() == (0, 0)
    assert (box.depth, box.bytes, box.delivered) == (0, 0, 3)


def test_what_was_not_acknowledged_is_sent_again_after_a_restart(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    add(box, store, b"a", b"b")
    box.pump()
    link.acks.append((1, None))
    box.pump()
    OPENED.remove(store)
    store.close()  # the agent dies with b in flight
    store, box, link = outbox(tmp_path)
    assert box.depth == 1
    add(box, store, b"c")
    box.pump()
    assert [p for _, _, p in link.sent] == [b"b", b"c"], "the old message first, then the new"


def test_nothing_is_handed_over_while_disconnected(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    link.connected = False
    add(box, store, b"a")
    box.pump()
    assert link.sent == []
    link.connected = True
    box.pump()
    assert [p for _, _, p in link.sent] == [b"a"]


def test_a_full_client_queue_leaves_messages_on_disk(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    link.full = True
    add(box, store, b"a", b"b")
    box.pump()
    link.full = False
    box.pump()
    assert [p for _, _, p in link.sent] == [b"a", b"b"]


def test_a_full_outbox_drops_the_oldest(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path, max_bytes=65536)
    link.connected = False
    payload = b"x" * 1000
    add(box, store, *[payload[:-3] + b"%03d" % i for i in range(100)])
    assert box.bytes <= 65536
    assert box.dropped == 100 - box.depth > 0
    assert store.outbox_size() == (box.depth, box.bytes)
    link.connected = True
    box.pump()
    first = link.sent[0][2]
    assert first.endswith(b"%03d" % box.dropped), "the newest messages are kept"


def test_refused_and_unsendable_messages_are_not_retried(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    add(box, store, b"ok")
    add(box, store, b"never", topic="bad/#")
    box.pump()
    assert box.unsendable == 1
    link.ack_all(failure="Not authorized")
    box.pump()
    assert (box.rejected, store.outbox_size()) == (1, (0, 0))


def rows_on_disk(directory: Path) -> list[bytes]:
    """The outbox's payloads as another connection sees them: only what has been committed."""
    db = sqlite3.connect(directory / database_name("edge-1"))
    try:
        return [bytes(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    finally:
        db.close()


def test_a_transactions_messages_are_handed_over_before_it_commits(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    on_disk_when_sent: list[list[bytes]] = []
    publish = link.publish_tracked

    def publish_and_look(topic: str, payload: bytes, *, kind: str) -> int | None:
        on_disk_when_sent.append(rows_on_disk(tmp_path))
        return publish(topic, payload, kind=kind)

    link.publish_tracked = publish_and_look  # type: ignore[method-assign]
    with box.transaction() as messages:
        messages += [("edgevae/d/alert", b"a", "alert"), ("edgevae/d/alert", b"b", "alert")]
    assert [p for _, _, p in link.sent] == [b"a", b"b"]
    assert on_disk_when_sent == [[], []], "handed over before the commit, not after its fsync"
    assert rows_on_disk(tmp_path) == [b"a", b"b"], "and on disk once it returns"
    assert (box.depth, box.in_flight) == (2, 2)
    box.pump()
    assert len(link.sent) == 2, "not handed over again"
    link.ack_all()
    box.pump()
    assert store.outbox_size() == (0, 0)


def test_a_transactions_messages_wait_behind_older_unsent_ones(tmp_path: Path) -> None:
    store, box, link = outbox(tmp_path)
    link.full = True
    add(box, store, b"a")
    box.pump()
    link.full = False
    with box.transaction() as messages:
        messages.append(("edgevae/d/alert", b"b", "alert"))
    assert link.sent == [], "b may not overtake a"
    box.pump()
    assert [p for _, _, p in link.sent] == [b"a", b"b"]


def failing_commits(store: StateStore) -> Callable[[], Any]:
    """The store's transaction as a disk that fails at the commit leaves it: rolled back, an error raised."""

    @contextmanager
    def transaction() -> Iterator[None]:
        store.db.execute("BEGIN IMMEDIATE")
        yield
        store.db.execute("ROLLBACK")
        msg = "disk I/O error"
        raise sqlite3.OperationalError(msg)

    return transaction


def test_a_failed_commit_sends_each_message_once_and_forgets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, box, link = outbox(tmp_path)
    commit = store.transaction
    monkeypatch.setattr(store, "transaction", failing_commits(store))
    with pytest.raises(sqlite3.OperationalError), box.transaction() as messages:
        messages += [("edgevae/d/alert", b"a", "alert"), ("edgevae/d/alert", b"b", "alert")]
    assert [p for _, _, p in link.sent] == [b"a", b"b"], "handed over once, not again without durability"
    assert (box.depth, box.bytes, box.in_flight) == (0, 0, 0)
    assert rows_on_disk(tmp_path) == []
    monkeypatch.setattr(store, "transaction", commit)
    with box.transaction() as messages:
        messages.append(("edgevae/d/alert", b"c", "alert"))  # may take a's sequence number
    link.ack_all()
    box.pump()
    assert [p for _, _, p in link.sent] == [b"a", b"b", b"c"]
    assert store.outbox_size() == (0, 0)
    assert box.delivered == 1, "the acknowledgements of a and b count for nothing"


def test_a_failed_commit_while_disconnected_sends_its_messages_without_durability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, box, link = outbox(tmp_path)
    link.connected = False
    monkeypatch.setattr(store, "transaction", failing_commits(store))
    with pytest.raises(sqlite3.OperationalError), box.transaction() as messages:
        messages.append(("edgevae/d/alert", b"a", "alert"))
    assert [p for _, _, p in link.sent] == [b"a"], "paho holds it for the reconnect"
    assert (box.depth, box.in_flight) == (0, 0)


# --- open alerts ------------------------------------------------------------------------------------------


def test_an_open_alert_reads_back_as_it_was(tmp_path: Path) -> None:
    peak = WindowResult("pump-1", 40, 1.0, 8.0, 3.5, np.array([1.0, np.inf, 0.5], dtype=np.float32), True, True)
    with StateStore(tmp_path, "edge-1") as store, store.transaction():
        store.save_open_alert("pump-1", OpenAlert("pump-1", 5.0, peak).to_record())
    store = opened(tmp_path)
    back = OpenAlert.from_record(store.open_alerts()["pump-1"])
    assert (back.device, back.started_ts, back.peak.score, back.peak.index) == ("pump-1", 5.0, 3.5, 40)
    assert back.peak.channel_error.tolist()[0] == 1.0
    assert np.isfinite(back.peak.channel_error).all(), "JSON has no infinity: kept as the largest float"
    with store.transaction():
        store.delete_open_alert("pump-1")
    assert store.open_alerts() == {}


def test_a_transaction_that_fails_leaves_nothing(tmp_path: Path) -> None:
    store, box, _ = outbox(tmp_path)

    def fail_inside() -> None:
        with store.transaction():
            box.add("t", b"a", "alert")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_inside()
    assert store.outbox_size() == (0, 0)


def test_check_config_refuses_a_state_directory_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgevae.agent.__main__ import main

    bundle = make_bundle(tmp_path / "b")
    load_bundle(bundle).close()
    blocked = tmp_path / "file"
    blocked.write_text("")
    config = tmp_path / "agent.toml"
    config.write_text(f'[model]\nbundle = "{bundle}"\n[state]\ndirectory = "{blocked}/state"\n')
    assert main(["--config", str(config), "--check-config"]) == 2
    assert "state.directory:" in capsys.readouterr().err


def test_a_second_agent_on_the_same_state_exits_2(tmp_path: Path, broker: Broker, bundle: Path, names: Names) -> None:
    config = tmp_path / "agent.toml"
    doc = agent_document(broker, bundle, names, state={"directory": str(tmp_path / "state")})
    config.write_text(to_toml(doc))
    collector = Collector(broker, [names.status])
    with agent_process(config) as first:
        collector.wait_payload(names.status, b"online", timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "edgevae.agent", "--config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert first.poll() is None, "the first agent runs on"
    collector.close()
    assert second.returncode == 2
    assert "in use by another agent" in second.stderr
