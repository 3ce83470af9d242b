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
from edgevae.agent.device_state import Acknowledgement, DeviceStates
from edgevae.agent.outbox import Outbox
from edgevae.agent.state import StateStore
from edgevae.agent.topics import Topics

logger = logging.getLogger(__name__)


class AlertJournal:
    """Also keeps the per-device states in step with the alerts, and holds back the alerts of muted devices:
    an alert that opens while its device is muted is recorded and shown in the state, but neither it nor its
    end is published."""

    def __init__(
        self, store: StateStore, outbox: Outbox, manifest: Manifest, topics: Topics, states: DeviceStates
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.manifest = manifest
        self.topics = topics
        self.agent_id = topics.agent
        self.states = states
        self.held_back: set[str] = set()  # ids of open alerts raised while their device was muted
        self.muted_alerts = 0

    def record(self, result: StepResult, detector: Detector) -> list[Alert]:
        """Queue the pass's alerts and ends and update the open-alert records; returns the alerts raised (held
        back or not)."""
        raised = [alerts.from_event(event, self.manifest, self.agent_id) for event in result.events]
        self.states.observe(result.windows, raised)
        if not result.events and not result.changed:
            return []
        queued = [alert for alert in raised if not self._held_back(alert)]
        try:
            with self.outbox.transaction() as messages:
                messages += [(self.topics.alert(alert.device), alert.to_json(), "alert") for alert in queued]
                for device in result.changed:
                    open_alert = detector.open_alert(device)
                    if open_alert is None:
                        self.store.delete_open_alert(device)
                    else:
                        self.store.save_open_alert(device, self._record(open_alert))
        except sqlite3.Error as exc:
            # A full or failing disk must not cost the alert: the outbox sent it on, held in memory only.
            logger.error("state database write failed (%s): %d alerts sent without durability", exc, len(queued))
        return raised

    def _held_back(self, alert: Alert) -> bool:
        if alert.type == "alert" and self.states.is_muted(alert.device):
            self.held_back.add(alert.id)
            self.muted_alerts += 1
            return True
        if alert.type == "end" and alert.id in self.held_back:
            self.held_back.discard(alert.id)
            return True
        return False

    def acknowledge(self, detector: Detector, device: str, ack: Acknowledgement) -> None:
        """Keep the acknowledgement with the open alert's record, so that it survives a restart."""
        self.states.acknowledge(device, ack)
        open_alert = detector.open_alert(device)
        if open_alert is not None:
            with self.store.transaction():
                self.store.save_open_alert(device, self._record(open_alert))

    def resume(self, detector: Detector) -> list[Alert]:
        """Take up the alerts open at the last stop; returns the ends queued for those that cannot continue."""
        ended: list[Alert] = []
        model = {"id": self.manifest.model_id, "version": self.manifest.model_version}
        with self.outbox.transaction() as messages:
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
                    self.states.resume(self._resumed_alert(open_alert, record), _ack(record))
                    logger.warning("alert %s on %s is still open; it continues", record["id"], device)
                    continue
                end = self._model_changed_end(open_alert, record)
                messages.append((self.topics.alert(device), end.to_json(), "alert"))
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
        with self.outbox.transaction() as messages:
            for end in ends:
                messages.append((self.topics.alert(end.device), end.to_json(), "alert"))
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
            "ack": ack.to_dict() if (ack := self.states.acknowledgement(open_alert.device)) else None,
        }

    def _resumed_alert(self, open_alert: OpenAlert, record: dict[str, Any]) -> Alert:
        """The opening alert of an alert that continues after a restart, as the device state shows it."""
        peak = open_alert.peak
        return Alert(
            type="alert", id=str(record["id"]), agent=self.agent_id, device=open_alert.device,
            started=open_alert.started_ts, window_start=peak.start_ts, window_end=peak.end_ts, score=peak.score,
            threshold=float(record["threshold"]), peak_score=peak.score,
            top_channels=alerts.top_channels(tuple(record["channels"]), peak.channel_error),
            model_id=str(record["model"]["id"]), model_version=str(record["model"]["version"]),
        )  # fmt: skip

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


def _ack(record: dict[str, Any]) -> Acknowledgement | None:
    ack = record.get("ack")
    if not isinstance(ack, dict):
        return None
    try:
        return Acknowledgement(str(ack["alert_id"]), str(ack["by"]), float(ack["time"]), str(ack.get("note", "")))
    except (KeyError, TypeError, ValueError):
        return None
