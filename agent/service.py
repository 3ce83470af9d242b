"""The daemon: the one place that wires MQTT to readings, the detector, alerts and stats, and back to MQTT."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevae.agent.active_model import load_active
from edgevae.agent.bundle import Manifest
from edgevae.agent.config import Config
from edgevae.agent.config_file import read_password
from edgevae.agent.detector import Detector
from edgevae.agent.device_state import Acknowledgement, DeviceStates
from edgevae.agent.drift_watch import DriftWatch
from edgevae.agent.health import HealthJob
from edgevae.agent.inbox import Inbox
from edgevae.agent.intake import Intake
from edgevae.agent.journal import AlertJournal
from edgevae.agent.metrics import Metrics
from edgevae.agent.mqtt import MqttLink
from edgevae.agent.notify import Notifier
from edgevae.agent.outbox import Outbox
from edgevae.agent.presence import Presence
from edgevae.agent.readings import DeviceTopics, OrderGuard, ReadingParser
from edgevae.agent.readings_client import open_readings
from edgevae.agent.release import Device
from edgevae.agent.scoring import ScoringThread
from edgevae.agent.service_stats import link_state, metrics_sample, report_status, stats_report
from edgevae.agent.state import StateStore
from edgevae.agent.stats import DropLog, RateMeter, StatsReport
from edgevae.agent.topics import Topics
from edgevae.core.decision import Debounce

if TYPE_CHECKING:
    from edgevae.agent.model_store import ModelStore
    from edgevae.agent.update_setup import UpdateRunner

logger = logging.getLogger(__name__)

READINGS_SUBSCRIBE_WAIT_S = 3.0
MAX_TICK_S = 0.5
# At a clean stop, how long to wait for the broker to acknowledge the alerts in flight.
SETTLE_S = 2.0


class Service:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        """Open the state directory, then load, verify and warm up the model; raises StateError (a ConfigError),
        BundleError or ModelLoadError. Does not connect yet."""
        self.config = config
        self.agent_id = config.agent_id
        self.notifier = notifier or Notifier()
        self.store = StateStore(config.state.path, self.agent_id)
        try:
            self.models = _model_store(config)
            self.bundle, self.backend = load_active(config, self.models)
        except BaseException:
            self.store.close()
            raise
        manifest = self.manifest = self.bundle.manifest
        det = config.detection
        debounce = self._debounce(manifest)
        self.detector = Detector(manifest, self.backend, debounce, det.max_batch, det.max_gap_periods)
        limits = config.limits
        self.parser = self._parser(manifest)
        self.guard = OrderGuard(limits.max_devices, det.max_future_s or None, det.reanchor_after)
        self.topics = DeviceTopics(config.mqtt.topics)
        self.out = Topics(config.mqtt.topic_prefix, self.agent_id)
        self.drops = DropLog(config.log.drop_warning_interval_s)
        self.inbox = Inbox(limits.queue_size, limits.queue_bytes)
        password = read_password(config.mqtt)
        self.link = MqttLink(
            config.mqtt, self.out, self.inbox, password, limits.max_payload_bytes,
            control=config.control.enabled, queue_wait_s=limits.queue_wait_s,
        )  # fmt: skip
        self.readings_link = open_readings(config.mqtt, self.agent_id, password, limits.max_payload_bytes,
                                           self.link.enqueue, self.link.is_connected)  # fmt: skip
        self.link.readings = self.readings_link is None
        self.outbox = Outbox(self.store, self.link, config.state.outbox_max_bytes)
        self.states = DeviceStates(self.out, manifest.threshold.value, config.mqtt.state_interval_s)
        self.journal = AlertJournal(self.store, self.outbox, manifest, self.out, self.states)
        self.journal.resume(self.detector)
        self.presence = Presence(
            config, self.link, self.store, self.states, self._acknowledge, self._stats_now, self._selftest_now
        )
        self.drift = DriftWatch(manifest, self._publish_drift)
        self.metrics: Metrics | None = Metrics(lambda: metrics_sample(self)) if config.metrics.port else None
        self.updates: UpdateRunner | None = None
        if self.models is not None:
            from edgevae.agent.update_setup import UpdateRunner

            self.updates = UpdateRunner(
                config, self.models, read_password(config.mqtt), self._publish_update, self._device
            )
        self.detector.observer = self._observe_batch
        self.scoring = ScoringThread(self.detector)
        self.intake = Intake(self.inbox, self.topics, self.parser, self.guard, self.drops, self.detector,
                             self.scoring, self.drift)  # fmt: skip
        self.health: HealthJob | None = None
        if config.selftest.enabled:
            self.health = HealthJob(
                self.agent_id, self._current_model, self._publish_health, config.selftest.interval_s,
                config.selftest.magnitude, config.selftest.windows,
            )  # fmt: skip
        self.selftest_requested = False  # set on SIGUSR1: run the detection self-test now
        self._oversized_seen = 0
        self._next_eviction = 0.0
        self.evicted = 0
        self.alerts = 0
        self.scoring_errors = 0
        self._queue_full_seen = 0
        self._started = time.monotonic()
        self._rate = RateMeter()
        logger.info(
            "model %s %s: %d channels, window %d, stride %d, threshold %.6g, debounce %d/%d, backend %s",
            manifest.model_id, manifest.model_version, len(manifest.channels), manifest.window, manifest.stride,
            manifest.threshold.value, debounce.trigger, debounce.clear, self.backend.key,
        )  # fmt: skip

    def _debounce(self, manifest: Manifest) -> Debounce:
        det = self.config.detection
        return Debounce(det.trigger or manifest.debounce.trigger, det.clear or manifest.debounce.clear)

    def _parser(self, manifest: Manifest) -> ReadingParser:
        det, limits = self.config.detection, self.config.limits
        return ReadingParser(
            manifest.channels,
            limits.max_payload_bytes,
            limits.max_readings_per_message,
            det.unknown_channels == "ignore",
            det.timestamp_unit,
        )

    def _device(self) -> Device:
        active = self.models.state.active if self.models is not None else None
        cfg = self.config.updates
        return Device(
            self.agent_id, cfg.group, self.manifest.channels, self.config.model.backend_key, cfg.hardware_id,
            active.release if active is not None else 0,
        )  # fmt: skip

    def _current_model(self) -> tuple[Path, Manifest, str, str, Any]:
        bundle = self.bundle
        return (
            bundle.root,
            bundle.manifest,
            str(bundle.model_path),
            self.config.model.backend_key,
            self.config.model.backend,
        )

    def _observe_batch(self, windows: Any, scores: Any, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(seconds)
        if self.updates is not None:
            self.updates.updates.observe(windows, scores, seconds, self.manifest.threshold.value)

    def _publish_health(self, payload: bytes) -> None:
        self.link.publish(self.out.agent_topic("health"), payload, kind="health", qos=1, retain=True)

    def _publish_drift(self, payload: bytes) -> None:
        self.link.publish(self.out.agent_topic("drift"), payload, kind="drift", qos=1, retain=True)

    def _publish_update(self, payload: bytes) -> None:
        self.link.publish(self.out.agent_topic("update"), payload, kind="update", qos=1, retain=True)

    def _acknowledge(self, device: str, ack: Acknowledgement) -> None:
        self.journal.acknowledge(self.detector, device, ack)

    def _stats_now(self) -> dict[str, Any]:
        report = self._publish_stats()
        return report.to_dict()

    def _selftest_now(self) -> bool:
        if self.health is None:
            return False
        self.health.poke()
        return True

    def _swap_model(self) -> None:
        """Between two scoring passes: score with the model the update thread handed over, if any."""
        if self.updates is None:
            return
        candidate = self.updates.updates.take_swap()
        if candidate is None:
            return
        self._score(wait=True)  # the windows due so far are decided by the model that took them
        manifest = candidate.manifest
        was_open = self.detector.swap(manifest, candidate.backend, self._debounce(manifest))
        for end in self.journal.end_all(was_open):
            logger.warning("alert %s on %s ended: the model changed", end.id, end.device)
        old_backend, old_bundle = self.backend, self.bundle
        self.backend, self.bundle, self.manifest = candidate.backend, candidate.bundle, manifest
        self.parser = self.intake.parser = self._parser(manifest)
        self.journal.manifest = manifest
        self.states.threshold = manifest.threshold.value
        self.drift.swap(manifest)
        self.presence.rediscover()
        old_backend.close()
        old_bundle.close()
        logger.warning("now scoring with %s %s", manifest.model_id, manifest.model_version)
        self.updates.updates.committed(candidate)
        if self.health is not None:
            self.health.poke()

    def run(self, stop: threading.Event, reloading: threading.Event | None = None) -> None:
        """Score until `stop` is set, then publish `stopped` and disconnect; `reloading` set tells systemd a
        reload (RELOADING=1) rather than a stop is under way."""
        watchdog_s = self.notifier.watchdog_s
        tick = min(MAX_TICK_S, self.config.stats.interval_s, watchdog_s or MAX_TICK_S)
        if self.readings_link is not None:
            self.readings_link.start()
            # `online` tells publishers the agent takes readings: on a first start the broker has no session
            # to queue them in until this subscription stands.
            self.readings_link.subscribed.wait(READINGS_SUBSCRIBE_WAIT_S)
        self.link.start()
        if self.updates is not None:
            self.updates.start()
        if self.health is not None:
            self.health.start()
        if self.metrics is not None and not self.metrics.start(self.config.metrics):
            self.metrics = None
        self._status_link = link_state(self)
        self.notifier.ready(f"scoring {self.manifest.model_id} {self.manifest.model_version}")
        last_ping = next_stats = next_drift = time.monotonic()
        try:
            while not stop.is_set():
                self.intake.drain(tick)
                healthy = self._score()
                self._swap_model()
                if self.selftest_requested and self.health is not None:
                    self.selftest_requested = False
                    self.health.poke()
                self.outbox.pump()
                self.presence.pump(self.manifest)
                self._evict_idle()
                now = time.monotonic()
                # The watchdog hears from this loop only, and only after a pass that scored (or had nothing
                # to score): a wedged or persistently failing backend stops the pings and systemd restarts us.
                if healthy and watchdog_s and now - last_ping >= watchdog_s:
                    self.notifier.watchdog()
                    last_ping = now
                if now >= next_drift:
                    self.drift.tick()
                    next_drift = now + self.config.drift.interval_s
                self.drift.step()
                if now >= next_stats:
                    self._publish_stats()
                    next_stats = now + self.config.stats.interval_s
                elif link_state(self) != self._status_link:
                    report_status(self)  # a connection that came or went shows at once, not at the next stats
        finally:
            logger.info("stopping")
            if reloading is not None and reloading.is_set():
                self.notifier.reloading()
            else:
                self.notifier.stopping()
            self._score(wait=True)  # windows already due are decided; their alerts wait in the outbox if not sent now
            self.scoring.close()
            self.outbox.settle(SETTLE_S)
            if self.updates is not None:
                self.updates.stop()
            if self.health is not None:
                self.health.stop()
            if self.metrics is not None:
                self.metrics.stop()
            reason = "reloading" if reloading is not None and reloading.is_set() else "stopped"
            self.link.stop(self.states.cleared(), reason)
            if self.readings_link is not None:
                self.readings_link.stop()
            self.backend.close()
            self.bundle.close()
            self.store.close()
            self.notifier.close()

    def _evict_idle(self) -> None:
        """Forget devices silent for `limits.device_idle_s`, so that slots taken by ids that never come back
        (a misconfigured sensor, junk topics) are freed for real devices; checked at most once a second."""
        idle_s = self.config.limits.device_idle_s
        now = time.monotonic()
        if not idle_s or now < self._next_eviction:
            return
        self._next_eviction = now + 1.0
        evicted = [d for d in self.guard.idle(idle_s) if self.detector.forget(d)]
        for device in evicted:
            self.guard.forget(device)
            self.presence.forget(device)
            self.drift.forget(device)
        if evicted:
            self.evicted += len(evicted)
            logger.info("forgot %d devices silent for %.0f s (%s)", len(evicted), idle_s, ", ".join(evicted[:5]))

    def _score(self, wait: bool = False) -> bool:
        """Decide the windows being scored, then launch those due since (with `wait`, decide them too);
        False when the backend failed."""
        healthy = self._collect()
        if self.detector.pending:
            self.scoring.launch()
            if wait:
                healthy = self._collect() and healthy
        return healthy

    def _collect(self) -> bool:
        if not self.scoring.busy:
            return True
        try:
            result = self.scoring.collect()
        except Exception:
            self.scoring_errors += 1
            logger.exception("scoring failed; the due windows are dropped")
            if self.updates is not None:
                self.updates.updates.scoring_failed.set()  # within probation, a reason to roll back
                self.updates.updates.wake.set()
            return False
        self.drift.observe_windows(result.windows)
        for alert in self.journal.record(result, self.detector):
            if alert.type == "alert":
                self.alerts += 1
                top = ", ".join(f"{c.channel} {c.share:.0%}" for c in alert.top_channels)
                logger.warning("alert %s on %s: score %.4g (%s)", alert.id, alert.device, alert.score, top)
            else:
                logger.warning("alert %s on %s ended after %.1f s", alert.id, alert.device, alert.duration_s or 0.0)
        return True

    @property
    def readings(self) -> int:
        return self.intake.readings

    def report(self) -> StatsReport:
        return stats_report(self)

    def _publish_stats(self) -> StatsReport:
        report = self.report()
        self.link.publish(self.out.agent_topic("stats"), report.to_json(), kind="stats", qos=1, retain=True)
        report_status(self, report)
        return report


def _model_store(config: Config) -> ModelStore | None:
    """The model store where model updates are on. python-tuf and what it imports (some 11 MiB resident) load
    only then: most agents run one bundle."""
    if not config.updates.enabled:
        return None
    from edgevae.agent.update_setup import model_store

    return model_store(config)
