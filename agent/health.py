"""The detection self-test: does the running model still flag faults and leave normal windows alone?

Normal windows (a bundled generator's samples where the bundle ships one, `selftest.windows` of them with
a new seed each run; else the bundle's golden windows) are scored as they are and with faults injected on
one channel at a time (`edgevae.core.faults`: offset, spike, drift, noise, of `selftest.magnitude`
standard deviations over the rows the score covers), with the model and threshold the agent runs. The
report is published retained on `<prefix>/v1/<agent>/health`:

    {"schema":1,"agent":"edge-0042","time":...,"model":{"id":"pump-vae","version":"3.1.0"},
     "source":"generator","seed":3,"windows":64,"magnitude":3.0,"normal_flagged":0.0,
     "faults":{"offset":{"caught":1.0,"windows":96},"spike":{...},"drift":{...},"noise":{...}},"seconds":0.01}

It runs on its own thread at the lowest CPU priority (nice 19), with its own runtime sessions of the model
and the generator (one thread each), at start, after every model swap, on SIGUSR1 and every
`selftest.interval_s`: off the scoring thread, so a live reading never waits for it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.backends import Backend, create_backend
from edgevae.agent.bundle import Manifest
from edgevae.agent.generator import open_generator
from edgevae.core.faults import FAULT_KINDS, inject

logger = logging.getLogger(__name__)

SCHEMA = 1
LOWEST_PRIORITY = 19  # nice of the self-test thread: it never competes with scoring for a core


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
    seed: int | None = None  # the generator's seed; None for golden windows
    sampling_s: float = 0.0  # of `seconds`, the time spent sampling the generator
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


class Stopped(Exception):
    """The agent is stopping: a self-test in progress is abandoned."""


def normal_windows(
    folder: Path, manifest: Manifest, n: int, seed: int, between: Callable[[], None] | None = None
) -> tuple[np.ndarray, str] | None:
    """Normal windows to test with, and where they came from: `n` generator samples when the bundle ships a
    generator, else its golden windows; None when it has neither (or the generator fails to load)."""
    if manifest.generator:
        try:
            generator = open_generator(folder, manifest.generator)
        except Exception as exc:  # a broken generator costs the self-test its windows, never the agent
            logger.warning("the bundle's generator does not load (%s); self-testing with its golden windows", exc)
        else:
            if generator is not None:
                return generator.sample(n, seed, between), "generator"
    windows = golden_windows(folder, manifest)
    return None if windows is None else (windows, "golden")


def lower_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: nice applies per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (AttributeError, OSError) as exc:  # not Linux, or a syscall filter that forbids it
        logger.info("the self-test runs at normal priority: %s", exc)


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


def summary(report: HealthReport) -> dict[str, Any]:
    """The figures of a report that the update status message carries."""
    caught = {kind: figures["caught"] for kind, figures in report.faults.items()}
    return {
        "source": report.source,
        "windows": report.windows,
        "normal_flagged": report.normal_flagged,
        "caught": caught,
    }


def candidate_verdict(report: HealthReport, max_normal_flagged: float, min_caught: float) -> str | None:
    """Why a newly received model fails its detection self-test, or None when it passes: it flags more than
    `max_normal_flagged` of the normal windows, or catches less than `min_caught` of the faults (all kinds)."""
    caught = float(np.mean([figures["caught"] for figures in report.faults.values()]))
    if report.normal_flagged > max_normal_flagged:
        return (
            f"flags {report.normal_flagged:.0%} of {report.windows} normal {report.source} windows "
            f"(at most {max_normal_flagged:.0%} allowed)"
        )
    if caught < min_caught:
        return f"catches {caught:.0%} of the injected faults (at least {min_caught:.0%} required)"
    return None


class HealthJob:
    """Runs the self-test on its own thread: at start, when `poke`d (after a model swap, on demand) and on a
    schedule."""

    def __init__(
        self,
        agent: str,
        current: Callable[[], tuple[Path, Manifest, str, str, Any]],
        publish: Callable[[bytes], None],
        interval_s: float,
        magnitude: float,
        windows: int = 64,
    ) -> None:
        self.agent = agent
        self.current = current  # (bundle folder, manifest, model path, backend key, backend options)
        self.publish = publish
        self.interval_s = interval_s
        self.magnitude = magnitude
        self.windows = windows
        self.runs = 0
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
        lower_priority()
        while not self._stop.is_set():
            self._poke.wait(self.interval_s if self.interval_s > 0 else None)
            if self._stop.is_set():
                return
            self._poke.clear()
            try:
                self.run_once()
            except Stopped:
                return
            except Exception:
                logger.exception("the detection self-test failed; scoring is not affected")

    def _between(self) -> None:
        if self._stop.is_set():
            raise Stopped

    def run_once(self) -> HealthReport | None:
        folder, manifest, model_path, backend_key, options = self.current()
        seed = self.runs
        self.runs += 1
        started = time.perf_counter()
        found = normal_windows(folder, manifest, self.windows, seed, self._between)
        if found is None:
            logger.info("detection self-test skipped: the bundle ships no generator and no golden windows")
            return None
        windows, source = found
        sampling_s = time.perf_counter() - started
        backend = create_backend(Path(model_path), backend_key, options)  # its own session, off the hot path
        try:
            report = detection_self_test(backend, manifest, windows, self.agent, source, self.magnitude)
        finally:
            backend.close()
        if source == "generator":
            report.seed, report.sampling_s = seed, round(sampling_s, 4)
            report.seconds = round(report.seconds + sampling_s, 4)
        self.last = report
        self.publish(report.to_json())
        caught = ", ".join(f"{k} {v['caught']:.0%}" for k, v in report.faults.items())
        logger.info(
            "detection self-test (%d %s windows): normal flagged %.0f%%; caught %s",
            report.windows, source, 100 * report.normal_flagged, caught,
        )  # fmt: skip
        return report
