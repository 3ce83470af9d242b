"""At-least-once delivery of alerts: written to disk as they are sent, deleted only when the broker acknowledges.

An alert or end is appended to the state database, in the same transaction as the open-alert record it
changes, and handed to the broker link in order, a bounded number in flight at a time. The broker's PUBACK
deletes it. The messages of an `Outbox.transaction()` are handed over just before it commits, when nothing
older waits: the commit's fsync (a fraction of a millisecond on an SSD, tens of milliseconds on an SD card)
then overlaps their delivery instead of delaying it. A crash before the commit completes loses them unless
the broker already has them, as it would have lost them had they waited for the commit; once it completes
they are sent until acknowledged. A reconnect changes nothing (paho resends what it holds in flight); after
a restart every message still in the database is sent again, oldest first, before anything new. A message
can therefore arrive twice, never not at all: consumers deduplicate by the alert's `id`.

The outbox is bounded by `state.outbox_max_bytes`. When a new message would not fit, the oldest messages
are deleted to make room (counted as `dropped` and logged): after a very long outage the newest alerts,
which describe the plant as it is, are the ones worth keeping.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from edgevae.agent.state import OutboxRow, StateStore, message_size

logger = logging.getLogger(__name__)

# Messages handed to paho and not yet acknowledged. paho sends at most its own in-flight window (20) at a
# time; this bounds what it holds in memory, the rest waits on disk.
MAX_IN_FLIGHT = 200
OVERFLOW_LOG_INTERVAL_S = 60.0


class Link(Protocol):
    """What the outbox needs of the broker link (edgevae.agent.mqtt.MqttLink)."""

    def is_connected(self) -> bool: ...

    def publish_tracked(self, topic: str, payload: bytes, *, kind: str) -> int | None: ...

    def take_acks(self) -> list[tuple[int, str | None]]: ...


class Outbox:
    """Used from the service's thread only (as is its StateStore)."""

    def __init__(self, store: StateStore, link: Link, max_bytes: int, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.store = store
        self.link = link
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self.depth, self.bytes = store.outbox_size()
        self.delivered = 0
        self.dropped = 0  # deleted unsent to make room
        self.rejected = 0  # acknowledged with a failure reason (MQTT 5), e.g. not authorized
        self.unsendable = 0  # refused by the client library itself (never sendable)
        self._in_flight: dict[int, tuple[int, int]] = {}  # paho mid -> (seq, size)
        self._sent_seq = 0  # every message up to this one has been handed to the link by this process
        self._next_overflow_log = 0.0
        # Whether rows past _sent_seq may exist: the scoring loop pumps on every pass, and most passes have
        # nothing to send, so the database is asked only after something was added (or left from before).
        self._unsent = self.depth > 0
        self._fresh: list[OutboxRow] = []  # added in the open Outbox.transaction()
        self._dropped_fresh = False
        if self.depth:
            logger.info("outbox: %d messages (%d bytes) from before the restart are sent first", self.depth, self.bytes)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @contextmanager
    def transaction(self) -> Iterator[list[tuple[str, bytes, str]]]:
        """The state store's transaction, yielding a list for the (topic, payload, kind) messages that report
        its changes: they are added at its end and handed to the link just before it commits.

        When it fails, its messages are not on disk: those already handed over are forgotten here (an
        acknowledgement of one deletes nothing), the others are sent at once without durability, and the
        error is raised."""
        messages: list[tuple[str, bytes, str]] = []
        in_order = not self._unsent  # nothing older waits on disk: the new messages may go first
        before = (self._sent_seq, self.depth, self.bytes, self._unsent)
        handed: list[int] = []
        done = 0
        self._fresh, self._dropped_fresh = [], False
        try:
            with self.store.transaction():
                yield messages
                for topic, payload, kind in messages:
                    self.add(topic, payload, kind)
                if in_order and not self._dropped_fresh and self.link.is_connected():
                    handed, done, unsendable = self._hand_over(self._fresh)
                    self.store.remove(unsendable)
                    if done == len(self._fresh):
                        self._unsent = False
        except sqlite3.Error:
            for mid in handed:
                self._in_flight.pop(mid, None)
            self._sent_seq, self.depth, self.bytes, self._unsent = before
            for topic, payload, kind in messages[done:]:
                self.send_volatile(topic, payload, kind)
            raise
        finally:
            self._fresh = []

    def add(self, topic: str, payload: bytes, kind: str) -> None:
        """Queue a message. Call inside the store's transaction, with the state change it reports (or give it to
        `transaction()`, which also hands it over before the commit)."""
        size = message_size(topic, payload)
        if self.bytes + size > self.max_bytes:
            n, freed = self.store.drop_oldest(self.bytes + size - self.max_bytes)
            # This transaction's own first messages may be among those dropped: pump() sends what is left.
            self._dropped_fresh = True
            self.depth -= n
            self.bytes -= freed
            self.dropped += n
            now = time.monotonic()
            if now >= self._next_overflow_log:
                self._next_overflow_log = now + OVERFLOW_LOG_INTERVAL_S
                logger.error(
                    "outbox full (%d bytes): dropped the %d oldest unsent messages (%d in all)",
                    self.max_bytes, n, self.dropped,
                )  # fmt: skip
        seq = self.store.append(topic, payload, kind)
        self._fresh.append(OutboxRow(seq, topic, payload, kind, size))
        self.depth += 1
        self.bytes += size
        self._unsent = True

    def pump(self) -> None:
        """Delete what the broker acknowledged, then hand the next messages to the link while connected."""
        done: list[int] = []
        for mid, failure in self.link.take_acks():
            entry = self._in_flight.pop(mid, None)
            if entry is None:
                continue  # a stats or status message, or one dropped to make room
            seq, size = entry
            done.append(seq)
            self.depth -= 1
            self.bytes -= size
            if failure is None:
                self.delivered += 1
            else:
                # Retrying cannot help (an ACL that forbids the topic, a quota): keep the log, not the message.
                self.rejected += 1
                logger.error("broker refused outbox message %d: %s; it is not retried", seq, failure)
        if done:
            try:
                with self.store.transaction():
                    self.store.remove(done)
            except sqlite3.Error as exc:
                # They stay on disk and go out again after a restart: a duplicate, not a loss.
                logger.error("outbox: could not delete %d acknowledged messages: %s", len(done), exc)
            if self.depth <= 0:
                self.depth, self.bytes = self.store.outbox_size()  # resynchronise after rows were dropped
        if not self._unsent or not self.link.is_connected():
            return
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        rows = self.store.after(self._sent_seq, room)
        if len(rows) < room:
            self._unsent = False  # these are the last; if one cannot be handed over now, it is set again below
        unsendable = self._hand_over(rows)[2]
        if unsendable:
            with self.store.transaction():
                self.store.remove(unsendable)

    def _hand_over(self, rows: list[OutboxRow]) -> tuple[list[int], int, list[int]]:
        """Hand `rows` to the link in order while it takes them and there is room in flight; returns the
        message ids handed over, how many rows were dealt with (handed over or unsendable), and the sequence
        numbers of the unsendable ones, which the caller deletes."""
        handed: list[int] = []
        unsendable: list[int] = []
        done = 0
        for row in rows:
            if len(self._in_flight) >= self.max_in_flight:
                break
            try:
                mid = self.link.publish_tracked(row.topic, row.payload, kind=row.kind)
            except ValueError as exc:
                logger.error("outbox message %d on %r can never be sent (%s); deleted", row.seq, row.topic, exc)
                unsendable.append(row.seq)
                self.unsendable += 1
                self.depth -= 1
                self.bytes -= row.size
            else:
                if mid is None:
                    break  # the client's own queue is full: the rest waits on disk for the next pass
                self._in_flight[mid] = (row.seq, row.size)
                handed.append(mid)
            self._sent_seq = row.seq
            done += 1
        if done < len(rows):
            self._unsent = True
        return handed, done, unsendable

    def send_volatile(self, topic: str, payload: bytes, kind: str) -> None:
        """Hand a message to the link without the outbox (when the state database cannot be written)."""
        try:
            self.link.publish_tracked(topic, payload, kind=kind)
        except ValueError as exc:
            logger.error("message on %r can never be sent: %s", topic, exc)

    def settle(self, timeout: float) -> None:
        """Wait up to `timeout` for the messages in flight to be acknowledged (at a clean stop), so that fewer
        are sent twice after the restart."""
        deadline = time.monotonic() + timeout
        while (self._in_flight or self._pending_unsent()) and time.monotonic() < deadline:
            if not self.link.is_connected():
                return
            self.pump()
            time.sleep(0.01)

    def _pending_unsent(self) -> bool:
        return self._unsent and bool(self.store.after(self._sent_seq, 1))
