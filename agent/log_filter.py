"""A logging filter for libraries that repeat themselves."""

from __future__ import annotations

import logging
import time


class OncePerInterval(logging.Filter):
    """Let a message through at most once per `interval_s`: paho repeats some lines on every reconnect attempt
    ("Client is not connected"), which the agent's own rate-limited failure line already says."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = f"{record.levelno}:{record.msg}"
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        if len(self._last) > 1000:  # messages with ever-new text must not grow this without end
            self._last.clear()
        self._last[key] = now
        return True
