"""The agent's retained stats message, gathered from the running service's parts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from edgevae.agent.metrics import Sample
from edgevae.agent.readings import DropReason
from edgevae.agent.stats import StatsReport

if TYPE_CHECKING:
    from edgevae.agent.service import Service


def stats_report(service: Service) -> StatsReport:
    """What the agent counts now. Messages the network thread refused (inbox full, oversized) are counted as
    drops here, on the scoring thread, which owns the drop counters."""
    link, drops = service.link, service.drops
    if link.queue_full > service._queue_full_seen:
        n = link.queue_full - service._queue_full_seen
        drops.drop(DropReason.QUEUE_FULL, "broker", "scoring fell behind", n=n)
        service._queue_full_seen = link.queue_full
    if link.oversized > service._oversized_seen:
        detail = f"refused before queueing: over {service.config.limits.max_payload_bytes} bytes"
        drops.drop(DropReason.OVERSIZED, "broker", detail, n=link.oversized - service._oversized_seen)
        service._oversized_seen = link.oversized
    failed = dict(link.failed)
    if link.rejected:
        failed["rejected_by_broker"] = link.rejected
    detector, outbox, manifest = service.detector, service.outbox, service.manifest
    return StatsReport(
        agent=service.agent_id,
        time=time.time(),
        uptime_s=time.monotonic() - service._started,
        model={"id": manifest.model_id, "version": manifest.model_version, "backend": service.backend.key},
        devices=detector.devices,
        queue_depth=service.inbox.qsize(),
        readings=service.readings,
        readings_per_s=service._rate.rate(service.readings),
        windows_scored=detector.windows_scored,
        batches=detector.batches,
        alerts=service.alerts,
        alerts_open=detector.open_alerts,
        alerts_muted=service.journal.muted_alerts,
        devices_muted=len(service.states.muted()),
        gap_resets=detector.gap_resets,
        scoring_errors=service.scoring_errors,
        dropped=dict(drops.counts),
        published=dict(link.published),
        publish_deferred=dict(link.deferred),
        publish_failed=failed,
        outbox={
            "depth": outbox.depth,
            "bytes": outbox.bytes,
            "in_flight": outbox.in_flight,
            "delivered": outbox.delivered,
            "dropped": outbox.dropped,
            "rejected": outbox.rejected,
        },  # fmt: skip
        requests=_requests(service),
        drift=service.drift.summary(),
    )


def _requests(service: Service) -> dict[str, int]:
    counts = {"ok": 0, "refused": 0, **service.presence.controller.counts}
    counts["queue_full"] = service.link.requests_refused
    return counts


def metrics_sample(service: Service) -> Sample:
    """The counters as a scrape reads them, from the metrics server's thread: read-only (the drops that the
    network thread counted and the next stats message will log are added here, not moved)."""
    link = service.link
    dropped = dict(service.drops.counts)
    for reason, total, seen in (
        (DropReason.QUEUE_FULL, link.queue_full, service._queue_full_seen),
        (DropReason.OVERSIZED, link.oversized, service._oversized_seen),
    ):
        dropped[reason.value] = dropped.get(reason.value, 0) + total - seen
    failed = dict(link.failed)
    if link.rejected:
        failed["rejected_by_broker"] = link.rejected
    manifest, detector = service.manifest, service.detector
    return Sample(
        readings=service.readings,
        windows_scored=detector.windows_scored,
        batches=detector.batches,
        alerts=service.alerts,
        alerts_open=detector.open_alerts,
        alerts_muted=service.journal.muted_alerts,
        devices=detector.devices,
        queue_depth=service.inbox.qsize(),
        connected=link.connected.is_set() and readings_connected(service),
        outbox_depth=service.outbox.depth,
        outbox_bytes=service.outbox.bytes,
        model={"id": manifest.model_id, "version": manifest.model_version, "backend": service.backend.key},
        dropped=dropped,
        published=dict(link.published),
        publish_failed=failed,
        requests=_requests(service),
        drift=dict(service.drift.psi),
    )


def readings_connected(service: Service) -> bool:
    readings = service.readings_link
    return readings is None or readings.is_connected()


def link_state(service: Service) -> str:
    cfg = service.config.mqtt
    if not service.link.connected.is_set():
        return f"NOT CONNECTED to {cfg.broker} ({service.link.last_error or 'connecting'})"
    if service.readings_link is not None and not service.readings_link.is_connected():
        return f"readings NOT CONNECTED to {cfg.broker} ({service.readings_link.last_error or 'connecting'})"
    return f"connected to {cfg.broker}"


def report_status(service: Service, report: StatsReport | None = None) -> None:
    """The systemd status line (`systemctl status`): the link first, then what the agent is doing."""
    report = report or service.report()
    service._status_link = link_state(service)
    manifest = service.manifest
    service.notifier.status(
        f"{service._status_link}; {manifest.model_id} {manifest.model_version}: {report.devices} "
        f"devices, {report.windows_scored} windows scored, {report.readings_per_s:.0f} readings/s, "
        f"{report.alerts_open} alerts open"
    )
