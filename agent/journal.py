"""Alerts from the detector into the outbox, and open alerts into the state database, committed together.

After each scoring pass the alerts and ends it raised go to the outbox and the open-alert records they
change are written, in one transaction: a crash leaves either both or neither. At start, the records of
alerts that were open are read back: under the same model the alert continues under its id (it ends when
its device's windows clear, as if the agent had never stopped); under another model it cannot continue and
is ended at once with `reason: "model_changed"`.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from edgevae.agent import alerts
from edgevae.agent.alerts import Alert
from edgevae.agent.bundle import Manifest
from edgevae.agent.detector import Detector, OpenAlert, StepResult
from edgevae.agent.outbox import Outbox
from edgevae.agent.state import StateStore

logger = logging.getLogger(__name__)


def alert_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/alert"


class AlertJournal:
    def __init__(self, store: StateStore, outbox: Outbox, manifest: Manifest, agent_id: str, prefix: str) -> None:
        self.store = store
        self.outbox = outbox
        self.manifest = manifest
        self.agent_id = agent_id
        self.prefix = prefix

    def record(self, result: StepResult, detector: Detector) -> list[Alert]:
        """Queue the pass's alerts and ends and update the open-alert records; returns the alerts queued."""
        if not result.events and not result.changed:
            return []
        queued = [alerts.from_event(event, self.manifest, self.agent_id) for event in result.events]
        try:
            with self.store.transaction():
                for alert in queued:
                    self.outbox.add(alert_topic(self.prefix, alert.device), alert.to_json(), "alert")
                for device in result.changed:
                    open_alert = detector.open_alert(device)
                    if open_alert is None:
                        self.store.delete_open_alert(device)
                    else:
                        self.store.save_open_alert(device, self._record(open_alert))
        except sqlite3.Error as exc:
            # A full or failing disk must not cost the alert: it goes out now, held in memory only.
            logger.error("state database write failed (%s): %d alerts sent without durability", exc, len(queued))
            for alert in queued:
                self.outbox.send_volatile(alert_topic(self.prefix, alert.device), alert.to_json(), "alert")
        return queued

    def resume(self, detector: Detector) -> list[Alert]:
        """Take up the alerts open at the last stop; returns the ends queued for those that cannot continue."""
        ended: list[Alert] = []
        model = {"id": self.manifest.model_id, "version": self.manifest.model_version}
        with self.store.transaction():
            for device, record in self.store.open_alerts().items():
                try:
                    open_alert = OpenAlert.from_record(record)
                    same_model = record["model"] == model and record["agent"] == self.agent_id
                    if len(record["channels"]) != len(open_alert.peak.channel_error):
                        msg = "its channel count does not match its peak's channel errors"
                        raise ValueError(msg)
                except (KeyError, TypeError, ValueError) as exc:
                    logger.error("open alert of %r cannot be read back (%s); forgotten", device, exc)
                    self.store.delete_open_alert(device)
                    continue
                if same_model:
                    detector.resume(open_alert)
                    logger.warning("alert %s on %s is still open; it continues", record["id"], device)
                    continue
                end = self._model_changed_end(open_alert, record)
                self.outbox.add(alert_topic(self.prefix, device), end.to_json(), "alert")
                self.store.delete_open_alert(device)
                ended.append(end)
                logger.warning(
                    "alert %s on %s ended: it was raised by model %s %s, now %s %s",
                    end.id, device, end.model_id, end.model_version, model["id"], model["version"],
                )  # fmt: skip
        return ended

    def end_all(self, open_alerts: list[OpenAlert]) -> list[Alert]:
        """End the alerts open under the current model (before a model swap), each under its id."""
        ends = [self._model_changed_end(a, self._record(a)) for a in open_alerts]
        if not ends:
            return ends
        with self.store.transaction():
            for end in ends:
                self.outbox.add(alert_topic(self.prefix, end.device), end.to_json(), "alert")
                self.store.delete_open_alert(end.device)
        return ends

    def _record(self, open_alert: OpenAlert) -> dict[str, Any]:
        alert_id = alerts.alert_id(self.agent_id, open_alert.device, self.manifest, open_alert.started_ts)
        return {
            **open_alert.to_record(),
            "id": alert_id,
            "agent": self.agent_id,
            "model": {"id": self.manifest.model_id, "version": self.manifest.model_version},
            "threshold": self.manifest.threshold.value,
            "channels": list(self.manifest.channels),
        }

    def _model_changed_end(self, open_alert: OpenAlert, record: dict[str, Any]) -> Alert:
        """The end of an alert raised under another model: its id, model, threshold and channels as they were,
        its last known window (the peak) standing for the closing one."""
        peak = open_alert.peak
        return Alert(
            type="end",
            id=str(record["id"]),
            agent=self.agent_id,
            device=open_alert.device,
            started=open_alert.started_ts,
            window_start=peak.start_ts,
            window_end=peak.end_ts,
            score=peak.score,
            threshold=float(record["threshold"]),
            peak_score=peak.score,
            top_channels=alerts.top_channels(tuple(record["channels"]), peak.channel_error),
            model_id=str(record["model"]["id"]),
            model_version=str(record["model"]["version"]),
            ended=peak.end_ts,
            duration_s=peak.end_ts - open_alert.started_ts,
            reason="model_changed",
        )
