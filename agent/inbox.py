"""What crosses from paho's network thread to the scoring thread: readings in a queue bounded in count and
bytes, and control requests in a small one of their own."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

# Requests are few and small; more than this waiting is a flood, and the excess is refused unread.
MAX_REQUESTS = 100


class Inbox(queue.Queue[tuple[str, bytes]]):
    """The messages between paho's network thread and scoring: bounded in count and in payload bytes, so
    that the memory it can hold is set by the config (`limits.queue_size`, `limits.queue_bytes`)."""

    def __init__(self, maxsize: int = 0, max_bytes: int = 0) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes  # 0: no byte bound
        self.bytes = 0

    def put_nowait(self, item: tuple[str, bytes]) -> None:
        with self.mutex:
            if self._no_room(item):
                raise queue.Full
            self._add(item)

    def put_waiting(self, item: tuple[str, bytes], timeout: float, give_up: Callable[[], bool]) -> bool:
        """Put `item`, waiting up to `timeout` seconds for room (taking a message makes room); False if there
        was none by then, or as soon as `give_up()` says so (checked every tenth of a second)."""
        deadline = time.monotonic() + timeout
        with self.not_full:
            while self._no_room(item):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or give_up():
                    return False
                self.not_full.wait(min(remaining, 0.1))
            self._add(item)
            return True

    def _no_room(self, item: tuple[str, bytes]) -> bool:
        full = 0 < self.maxsize <= len(self.queue)
        return full or bool(self.max_bytes and self.bytes + len(item[1]) > self.max_bytes)

    def _add(self, item: tuple[str, bytes]) -> None:
        self._put(item)
        self.unfinished_tasks += 1
        self.not_empty.notify()

    def _put(self, item: tuple[str, bytes]) -> None:
        self.queue.append(item)
        self.bytes += len(item[1])

    def _get(self) -> tuple[str, bytes]:
        item: tuple[str, bytes] = self.queue.popleft()
        self.bytes -= len(item[1])
        return item


@dataclass(frozen=True)
class Request:
    """A control request as it arrived: MQTT 5's response topic and correlation data, when the sender set them."""

    action: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None
