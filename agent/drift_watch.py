"""The agent's side of drift: feeds each device's accepted readings and window scores to the bundle's
DriftMonitor, and on the stats interval publishes the retained drift report when a verdict changed.

Observing is one call per message and one per scoring pass (no per-reading Python work); the statistics are
computed every `drift.interval_s` only, on the service's thread, a few devices a pass (`step`): a hundred
devices assessed at once held the scoring loop for some 100 ms. A bundle without a training distribution (made
before bundles carried one) has no drift report, and says so once in the log.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from edgevae.agent.bundle import Manifest
from edgevae.agent.detector import WindowResult
from edgevae.agent.drift import SEVERITY, DriftMonitor

logger = logging.getLogger(__name__)
FLUSH_ROWS = 1000  # the monitor's window: more rows than this buffered would only be overwritten
DEVICES_PER_STEP = 4  # about 1 ms of assessment each


class DriftWatch:
    def __init__(self, manifest: Manifest, publish: Callable[[bytes], None]) -> None:
        self.publish = publish
        self.monitor: DriftMonitor | None = None
        self.psi: dict[str, float] = {}  # device -> latest score PSI, for the metrics
        self.verdicts: dict[str, str] = {}  # device -> latest overall verdict
        self.model: dict[str, str] = {}
        # What came since the monitor last took it: a list append a message, arrays only every FLUSH_ROWS.
        self._rows: dict[str, list[np.ndarray]] = defaultdict(list)
        self._row_counts: dict[str, int] = defaultdict(int)
        self._scores: dict[str, list[float]] = defaultdict(list)
        self._sweep: list[str] = []  # devices still to assess in this interval
        self.swap(manifest)

    def swap(self, manifest: Manifest) -> None:
        """A new model: its own training distribution, and every device starts afresh."""
        self.monitor = DriftMonitor.from_manifest(manifest)
        self.psi, self.verdicts = {}, {}
        self._sweep = []
        self._rows.clear()
        self._row_counts.clear()
        self._scores.clear()
        self.model = {"id": manifest.model_id, "version": manifest.model_version}
        if self.monitor is None:
            logger.info("bundle %s %s carries no training distribution: no drift report", manifest.model_id,
                        manifest.model_version)  # fmt: skip

    def observe_readings(self, device: str, values: np.ndarray) -> None:
        """A message's accepted readings, (n, channels)."""
        if self.monitor is None or not len(values):
            return
        self._rows[device].append(values)
        self._row_counts[device] += len(values)
        if self._row_counts[device] >= FLUSH_ROWS:
            self._flush(device)

    def observe_windows(self, windows: list[WindowResult]) -> None:
        if self.monitor is None:
            return
        for window in windows:
            scores = self._scores[window.device]
            scores.append(window.score)
            if len(scores) >= FLUSH_ROWS:
                self._flush(window.device)

    def _flush(self, device: str) -> None:
        assert self.monitor is not None
        rows = self._rows.pop(device, None)
        self._row_counts.pop(device, None)
        if rows:
            self.monitor.observe_values(device, rows[0] if len(rows) == 1 else np.concatenate(rows))
        scores = self._scores.pop(device, None)
        if scores:
            self.monitor.observe_scores(device, np.asarray(scores, dtype=np.float64))

    def forget(self, device: str) -> None:
        self._rows.pop(device, None)
        self._row_counts.pop(device, None)
        self._scores.pop(device, None)
        if self.monitor is not None:
            self.monitor.forget(device)
        self.psi.pop(device, None)
        self.verdicts.pop(device, None)

    def tick(self) -> None:
        """Every `drift.interval_s`: start assessing every device (see `step`)."""
        if self.monitor is not None and not self._sweep:
            self._sweep = sorted(set(self._rows) | set(self._scores) | set(self.monitor.devices))

    def step(self) -> None:
        """Every pass of the scoring loop: assess the next few devices of a sweep; at its end, publish the
        report when a device's verdict changed."""
        if self.monitor is None or not self._sweep:
            return
        for device in self._sweep[:DEVICES_PER_STEP]:
            self._flush(device)
            self.monitor.assess(device)
        del self._sweep[:DEVICES_PER_STEP]
        if self._sweep or not self.monitor.changed(assess=False):
            return
        report = self.monitor.report(assess=False)
        devices = report["devices"]
        self.psi = {d: r["scores"]["psi"] for d, r in devices.items() if r["scores"]["psi"] is not None}
        for device, entry in devices.items():
            before, now = self.verdicts.get(device), entry["verdict"]
            if now != before and (before is not None or now in ("moderate", "shift")):
                outside = ", ".join(sorted(entry["inputs"]["outside"])) or "none"
                log = logger.warning if now == "shift" else logger.info
                log("drift on %s: %s (inputs outside the training range: %s; score PSI %s)", device, now, outside,
                    entry["scores"]["psi"])  # fmt: skip
            self.verdicts[device] = now
        payload = {"time": round(time.time(), 3), "model": self.model, **report}
        self.publish(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())

    def summary(self) -> dict[str, Any]:
        """For the stats message: devices per verdict (empty when the bundle has no distribution)."""
        if self.monitor is None:
            return {}
        counts = Counter(self.verdicts.values())
        return {verdict: counts.get(verdict, 0) for verdict in SEVERITY}
