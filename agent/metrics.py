"""Prometheus metrics on a local port (`metrics.port`), read from the running agent at scrape time.

Counters are the ones the stats message carries, read without changing them; the scoring latency is a
histogram filled per backend call. The HTTP server runs on its own daemon thread (prometheus-client's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from edgevae.agent.config import MetricsConfig

logger = logging.getLogger(__name__)

# Per-batch scoring time: a window of the default model takes well under a millisecond on one core, a full
# batch of 256 tens of milliseconds; the top buckets catch a stalled backend.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True)
class Sample:
    """What the agent counts, as the scrape sees it."""

    readings: int
    windows_scored: int
    batches: int
    alerts: int
    alerts_open: int
    alerts_muted: int
    devices: int
    queue_depth: int
    connected: bool
    outbox_depth: int
    outbox_bytes: int
    model: dict[str, str]
    dropped: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    publish_failed: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)  # device -> score PSI


class AgentCollector(Collector):
    def __init__(self, sample: Callable[[], Sample]) -> None:
        self.sample = sample

    def collect(self) -> Iterator[Any]:
        s = self.sample()
        yield _counter("edgevae_readings", "readings accepted for scoring", s.readings)
        dropped = CounterMetricFamily("edgevae_dropped", "readings and messages not scored", labels=["reason"])
        for reason, n in sorted(s.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield _counter("edgevae_windows_scored", "windows scored", s.windows_scored)
        yield _counter("edgevae_batches", "backend calls", s.batches)
        yield _counter("edgevae_alerts", "alerts opened", s.alerts)
        yield _counter("edgevae_alerts_muted", "alerts held back because their device was muted", s.alerts_muted)
        yield _gauge("edgevae_alerts_open", "alerts open now", s.alerts_open)
        yield _gauge("edgevae_devices", "devices with readings in memory", s.devices)
        yield _gauge("edgevae_queue_depth", "messages waiting between the network thread and scoring", s.queue_depth)
        yield _gauge("edgevae_connected", "1 while connected to the broker", int(s.connected))
        yield _gauge("edgevae_outbox_depth", "alerts and ends waiting for the broker", s.outbox_depth)
        yield _gauge("edgevae_outbox_bytes", "bytes of alerts and ends waiting for the broker", s.outbox_bytes)
        for name, text, counts in (
            ("edgevae_published", "messages published, by kind", s.published),
            ("edgevae_publish_failed", "messages that could not be published, by kind", s.publish_failed),
        ):
            family = CounterMetricFamily(name, text, labels=["kind"])
            for kind, n in sorted(counts.items()):
                family.add_metric([kind], n)
            yield family
        requests = CounterMetricFamily("edgevae_requests", "control requests, by outcome", labels=["status"])
        for status, n in sorted(s.requests.items()):
            requests.add_metric([status], n)
        yield requests
        psi = GaugeMetricFamily("edgevae_score_psi", "score distribution shift from calibration", labels=["device"])
        for device, value in sorted(s.drift.items()):
            psi.add_metric([device], value)
        yield psi
        info = InfoMetricFamily("edgevae_model", "the model scoring now")
        info.add_metric([], {"id": s.model["id"], "version": s.model["version"], "backend": s.model["backend"]})
        yield info


class Metrics:
    """The registry and its server; `observe_batch` is called on the scoring thread after every backend call."""

    def __init__(self, sample: Callable[[], Sample]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(sample))
        self.latency = Histogram(
            "edgevae_scoring_seconds", "time of one backend call", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe_batch(self, seconds: float) -> None:
        self.latency.observe(seconds)

    def start(self, cfg: MetricsConfig) -> bool:
        """Serve on `cfg.host`:`cfg.port`; False (logged) when the port cannot be bound. Scoring matters more
        than its metrics: the agent then goes on without them, and says so loudly."""
        from prometheus_client import start_http_server

        host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
        try:
            self._server, self._thread = start_http_server(cfg.port, addr=cfg.host, registry=self.registry)
        except OSError as exc:
            logger.error("cannot serve metrics on %s port %d (%s); running without them", cfg.host, cfg.port, exc)
            return False
        logger.info("Prometheus metrics on http://%s:%d/metrics", host, cfg.port)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _counter(name: str, text: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)
