"""The detection self-test: does the running model still flag faults and leave normal windows alone?

Normal windows (the bundle's golden windows; a bundled generator's samples where the bundle ships one)
are scored as they are and with faults injected on one channel at a time (`edgevae.core.faults`: offset,
spike, drift, noise, of `selftest.magnitude` standard deviations over the rows the score covers), with the
model and threshold the agent runs. The report is published retained on `<prefix>/<agent>/health`:

    {"schema":1,"agent":"edge-0042","time":...,"model":{"id":"pump-vae","version":"3.1.0"},
     "source":"golden","windows":16,"magnitude":3.0,"normal_flagged":0.0,
     "faults":{"offset":{"caught":1.0,"windows":96},"spike":{...},"drift":{...},"noise":{...}},"seconds":0.01}

It runs on its own thread with its own runtime session, at start, after every model swap and every
`selftest.interval_s`: off the scoring thread, so a live reading never waits for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.backends import Backend, create_backend
from edgevae.agent.bundle import Manifest
from edgevae.core.faults import FAULT_KINDS, inject

logger = logging.getLogger(__name__)

SCHEMA = 1


@dataclass
class HealthReport:
    agent: str
    time: float
    model: dict[str, str]
    source: str
    windows: int
    magnitude: float
    normal_flagged: float  # fraction of normal windows above the threshold
    faults: dict[str, dict[str, float | int]] = field(default_factory=dict)  # kind -> caught fraction, windows
    seconds: float = 0.0
    schema: int = SCHEMA

    def to_json(self) -> bytes:
        data = asdict(self)
        return json.dumps({"schema": data.pop("schema"), **data}, separators=(",", ":")).encode()


def golden_windows(folder: Path, manifest: Manifest) -> np.ndarray | None:
    if not manifest.golden:
        return None
    try:
        with np.load(folder / str(manifest.golden["file"]), allow_pickle=False) as data:
            windows: np.ndarray = data["windows"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None
    return windows


def detection_self_test(
    backend: Backend, manifest: Manifest, windows: np.ndarray, agent: str, source: str, magnitude: float, seed: int = 0
) -> HealthReport:
    """Score `windows` as they are and with each fault kind on each channel, through `backend`."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    span = manifest.score_rows or manifest.window
    threshold = manifest.threshold
    flagged = threshold.is_anomalous(backend.run(windows).score)
    faults: dict[str, dict[str, float | int]] = {}
    for kind in FAULT_KINDS:
        caught = [
            threshold.is_anomalous(backend.run(inject(windows, kind, c, magnitude, span, rng)).score)
            for c in range(len(manifest.channels))
        ]
        hits = np.concatenate(caught)
        faults[kind] = {"caught": round(float(hits.mean()), 4), "windows": len(hits)}
    return HealthReport(
        agent=agent, time=round(time.time(), 3),
        model={"id": manifest.model_id, "version": manifest.model_version},
        source=source, windows=len(windows), magnitude=magnitude,
        normal_flagged=round(float(flagged.mean()), 4), faults=faults,
        seconds=round(time.perf_counter() - started, 4),
    )  # fmt: skip


class HealthJob:
    """Runs the self-test on its own thread: at start, when `poke`d (after a model swap) and on a schedule."""

    def __init__(
        self,
        agent: str,
        current: Callable[[], tuple[Path, Manifest, str, str, Any]],
        publish: Callable[[bytes], None],
        interval_s: float,
        magnitude: float,
    ) -> None:
        self.agent = agent
        self.current = current  # (bundle folder, manifest, model path, backend key, backend options)
        self.publish = publish
        self.interval_s = interval_s
        self.magnitude = magnitude
        self.last: HealthReport | None = None
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._poke.set()
        self._thread.start()

    def poke(self) -> None:
        self._poke.set()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.interval_s if self.interval_s > 0 else None)
            if self._stop.is_set():
                return
            self._poke.clear()
            try:
                self.run_once()
            except Exception:
                logger.exception("the detection self-test failed; scoring is not affected")

    def run_once(self) -> HealthReport | None:
        folder, manifest, model_path, backend_key, options = self.current()
        windows = golden_windows(folder, manifest)
        if windows is None:
            logger.info("detection self-test skipped: the bundle ships no golden windows")
            return None
        backend = create_backend(Path(model_path), backend_key, options)  # its own session, off the hot path
        try:
            report = detection_self_test(backend, manifest, windows, self.agent, "golden", self.magnitude)
        finally:
            backend.close()
        self.last = report
        self.publish(report.to_json())
        caught = ", ".join(f"{k} {v['caught']:.0%}" for k, v in report.faults.items())
        logger.info("detection self-test: normal flagged %.0f%%; caught %s", 100 * report.normal_flagged, caught)
        return report
