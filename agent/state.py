"""The agent's state directory: one SQLite database (WAL) holding the alert outbox and the open alerts.

Everything the agent must not forget across a crash, a power cut or a restart lives here: alerts and ends
not yet acknowledged by the broker, and the alerts that are open, with what is needed to continue or end
them. It sits in the state directory (systemd's `StateDirectory=`, outside any model folder), is locked by
one agent at a time, and a database that cannot be read is moved aside rather than stopping the agent.

Commits are `synchronous=FULL`: once a commit returns, its rows survive a power cut, and a message is sent
until the broker acknowledges it. The outbox hands a transaction's messages to the broker just before the
commit (edgevae.agent.outbox), so the fsync per scoring pass that raised an alert costs no alert latency.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevae.core.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS open_alerts (
    device TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mutes (
    device TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""


class StateError(ConfigError):
    """The state directory cannot be used: not writable, or held by another agent."""


def database_name(agent_id: str) -> str:
    """One database per agent id, so two agents on one host (or one test run) never share an outbox.

    >>> database_name("edge-0042"), database_name("a b/ü")
    ('edge-0042.sqlite3', 'a_b__.sqlite3')
    """
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in agent_id)
    return f"{safe.lstrip('.') or 'agent'}.sqlite3"


def message_size(topic: str, payload: bytes) -> int:
    """What a message counts against `state.outbox_max_bytes`: its topic's UTF-8 bytes and its payload."""
    return len(topic.encode()) + len(payload)


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    kind: str
    size: int


class StateStore:
    """The database, locked by this process. Not thread-safe: the service's thread alone uses it."""

    def __init__(self, directory: Path, agent_id: str) -> None:
        self.path = directory / database_name(agent_id)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock = self.path.with_suffix(".lock").open("a")
        except OSError as exc:
            msg = f"state directory {directory} cannot be used: {exc.strerror or exc}"
            raise StateError(msg, remedy="set state.directory to a directory the agent can write") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            msg = f"{self.path} is in use by another agent with id {agent_id!r}"
            raise StateError(msg, remedy="give each agent its own mqtt.client_id or state.directory") from exc
        try:
            self.db = self._open()
        except BaseException:
            self._lock.close()
            raise

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:  # cannot open or lock the file: no use moving it aside
            raise StateError(f"state database {self.path} cannot be opened: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            # A damaged database must not keep the agent from scoring: keep it for inspection, start afresh.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            logger.error("state database %s is unreadable (%s); moved to %s, starting empty", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(Path(f"{aside}{suffix}"))
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                msg = f"state database {self.path} has schema {version}, newer than this agent's {SCHEMA_VERSION}"
                raise StateError(msg, remedy="run the newer agent, or move the database away")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM outbox").fetchone()  # reads every page header: corruption shows here
        except BaseException:
            db.close()
            raise
        os.chmod(self.path, 0o600)
        return db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all (an alert and its open-alert record, say)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- the outbox -------------------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes, kind: str) -> int:
        """Add a message; returns its sequence number (messages are sent in that order)."""
        cur = self.db.execute(
            "INSERT INTO outbox (topic, payload, kind, size, created) VALUES (?, ?, ?, ?, ?)",
            (topic, payload, kind, message_size(topic, payload), time.time()),
        )
        return int(cur.lastrowid or 0)

    def after(self, seq: int, limit: int) -> list[OutboxRow]:
        rows = self.db.execute(
            "SELECT seq, topic, payload, kind, size FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        return [OutboxRow(int(s), str(t), bytes(p), str(k), int(n)) for s, t, p, k, n in rows]

    def remove(self, seqs: list[int]) -> None:
        self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_size(self) -> tuple[int, int]:
        """(messages, bytes of topic and payload) waiting for the broker's acknowledgement."""
        n, size = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        return int(n), int(size)

    def drop_oldest(self, bytes_to_free: int) -> tuple[int, int]:
        """Delete the oldest messages until at least `bytes_to_free` bytes are freed; (messages, bytes) freed."""
        freed = dropped = 0
        for seq, size in self.db.execute("SELECT seq, size FROM outbox ORDER BY seq").fetchall():
            if freed >= bytes_to_free:
                break
            self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            freed += int(size)
            dropped += 1
        return dropped, freed

    # --- open alerts ------------------------------------------------------------------------------------

    def save_open_alert(self, device: str, record: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO open_alerts (device, record) VALUES (?, ?) "
            "ON CONFLICT (device) DO UPDATE SET record = excluded.record",
            (device, json.dumps(record, separators=(",", ":"), allow_nan=False)),
        )

    def delete_open_alert(self, device: str) -> None:
        self.db.execute("DELETE FROM open_alerts WHERE device = ?", (device,))

    def open_alerts(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for device, record in self.db.execute("SELECT device, record FROM open_alerts").fetchall():
            try:
                found[str(device)] = json.loads(record)
            except ValueError:
                logger.error("open alert of %r in %s is unreadable; forgotten", device, self.path)
        return found

    # --- mutes -------------------------------------------------------------------------------------------

    def save_mute(self, device: str, until: float) -> None:
        """`until` in epoch seconds; 0 ends the mute."""
        with self.transaction():
            if until > 0:
                self.db.execute(
                    "INSERT INTO mutes (device, until) VALUES (?, ?) ON CONFLICT (device) DO UPDATE SET until = ?",
                    (device, until, until),
                )
            else:
                self.db.execute("DELETE FROM mutes WHERE device = ?", (device,))

    def mutes(self, now: float) -> dict[str, float]:
        """The mutes still running at `now`; those that ran out are deleted."""
        with self.transaction():
            self.db.execute("DELETE FROM mutes WHERE until <= ?", (now,))
            rows = self.db.execute("SELECT device, until FROM mutes").fetchall()
        return {str(device): float(until) for device, until in rows}

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
