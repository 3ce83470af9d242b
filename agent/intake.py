"""From the inbox to the detector: each message's device from its topic, its readings parsed and checked,
in order, and pushed into the device's window; what cannot be scored is counted and dropped with a reason.
Runs on the service's thread, between two scoring passes and while a batch is being scored."""

from __future__ import annotations

import logging
import queue

import numpy as np

from edgevae.agent.block_parse import parse_block
from edgevae.agent.detector import Detector
from edgevae.agent.drift_watch import DriftWatch
from edgevae.agent.inbox import Inbox
from edgevae.agent.readings import DeviceTopics, DropReason, OrderGuard, ReadingParser
from edgevae.agent.scoring import ScoringThread
from edgevae.agent.stats import DropLog

logger = logging.getLogger(__name__)

# Device ids longer than this are refused, so that every alert topic stays far inside MQTT's limits.
MAX_DEVICE_ID_BYTES = 256
# Most messages handled between two scoring passes, which bounds the time between watchdog pings.
MAX_DRAIN = 2000


class Intake:
    def __init__(
        self, inbox: Inbox, topics: DeviceTopics, parser: ReadingParser, guard: OrderGuard, drops: DropLog,
        detector: Detector, scoring: ScoringThread, drift: DriftWatch,
    ) -> None:  # fmt: skip
        self.inbox, self.topics, self.guard, self.drops = inbox, topics, guard, drops
        self.parser = parser  # replaced when the model changes
        self.detector, self.scoring, self.drift = detector, scoring, drift
        self.readings = 0  # pushed into the detector

    def drain(self, timeout: float) -> None:
        """Handle what has arrived (waiting up to `timeout` for the first message), until the queue is empty
        or a batch of windows is due; scoring then runs at once rather than waiting for a fuller batch. While
        a batch is being scored, handle only what has arrived, until its scores are in."""
        if self.scoring.busy:
            while not self.scoring.done() and self.detector.pending < self.detector.max_batch:
                try:
                    topic, payload = self.inbox.get_nowait()
                except queue.Empty:
                    return
                self.handle(topic, payload)
            return
        try:
            topic, payload = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        for _ in range(MAX_DRAIN):
            self.handle(topic, payload)
            if self.detector.pending >= self.detector.max_batch:
                return
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                return
        self.handle(topic, payload)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            self._handle_message(topic, payload)
        except Exception:
            # Nothing a sensor sends may stop the agent; an unforeseen failure is logged and the message lost.
            logger.exception("failed to handle a message on %r", topic)

    def _handle_message(self, topic: str, payload: bytes) -> None:
        device = self.topics.device(topic)
        if device is None:
            self.drops.drop(DropReason.BAD_TOPIC, repr(topic)[:80], "no device id level in the topic")
            return
        if len(device.encode()) > MAX_DEVICE_ID_BYTES:
            # Its alerts could not be published (the topic would be too long), so it is not scored at all.
            self.drops.drop(DropReason.BAD_TOPIC, repr(device)[:80], f"device id over {MAX_DEVICE_ID_BYTES} bytes")
            return
        block = parse_block(self.parser, payload)
        for reason, detail in block.drops:
            self.drops.drop(reason, device, detail)
        if not len(block):
            return
        ts, values = block.ts, block.values
        refused = self.guard.check_block(device, ts)
        if refused:
            for i, reason in refused:
                self.drops.drop(reason, device, f"ts {float(ts[i])!r}")
            keep = np.ones(len(ts), dtype=bool)
            keep[[i for i, _ in refused]] = False
            ts, values = ts[keep], values[keep]
            if not len(ts):
                return
        self.readings += len(ts)
        self.detector.push_block(device, ts, values)
        self.drift.observe_readings(device, values)
