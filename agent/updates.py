"""Model updates on the device: verify, stage, self-test, shadow, commit, probation, roll back.

One thread of its own does the slow parts (repository checks, downloads, loading and warming up a
candidate, shadow scoring), so scoring never waits for them. The scoring thread only feeds it the batches
it scores and, between two batches, swaps to the model this thread hands over (`take_swap`). Every step is
persisted (`edgevae.agent.model_store`) and published retained on `<prefix>/v1/<agent>/update`:

    {"schema": 1, "agent": "edge-0042", "group": "canary", "step": "shadow", "release": 17, "reason": "",
     "running": 16, "time": ...}

`running` is the release the device scores with (0: the bundle it was installed with).

Steps: received, verified, staged, shadow, probation, committed, rolled_back, rejected. A release that
was rejected or rolled back is never taken again; one equal to the running release is a no-op. Expired or
unreachable metadata stops updates, never scoring.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevae.agent.backends import Backend, create_backend
from edgevae.agent.bundle import Bundle, Manifest, load_bundle
from edgevae.agent.config import Config
from edgevae.agent.golden import self_test
from edgevae.agent.health import candidate_verdict, detection_self_test, normal_windows, summary
from edgevae.agent.model_store import Installed, ModelStore, Step
from edgevae.agent.release import Device, Release
from edgevae.agent.shadow import ShadowBounds, ShadowStats, verdict
from edgevae.agent.update_verify import Refused, Verified, Verifier

logger = logging.getLogger(__name__)

SCHEMA = 1
SHADOW_QUEUE = 32  # scored batches waiting for the candidate; beyond, batches are left out of the shadow
TICK_S = 1.0  # how often the thread looks at probation and at a rollback request between checks
ROLLBACK_REQUEST = "rollback.request"  # written by `edgevae-agent rollback` while the agent runs


@dataclass
class Candidate:
    installed: Installed
    bundle: Bundle
    backend: Backend
    rollback: bool = False  # handed over to go back to the previous model, not forward
    selftest: dict[str, object] | None = None  # its detection self-test's figures, before shadow

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    def close(self) -> None:
        self.backend.close()
        self.bundle.close()


def release_mismatch(release: Release, manifest: Manifest) -> str | None:
    """Whether the bundle's own manifest is the release its signed metadata describes."""
    c = release.compatibility
    ours = (manifest.model_id, manifest.model_version, set(manifest.channels), manifest.window, manifest.stride)
    signed = (release.model_id, release.model_version, set(c.channels), c.window, c.stride)
    if ours != signed or manifest.precision != c.precision:
        return f"the bundle's manifest ({manifest.model_id} {manifest.model_version}) is not the signed release"
    return None


class Updates:
    def __init__(
        self,
        config: Config,
        store: ModelStore,
        verifier: Verifier,
        publish: Callable[[bytes], None],
        device: Callable[[], Device],
    ) -> None:
        self.cfg = config.updates
        self.selftest = config.selftest
        self.backend_key = config.model.backend_key
        self.backend_options = config.model.backend
        self.agent_id = config.agent_id
        self.store = store
        self.verifier = verifier
        self.publish = publish
        self.device = device
        self.bounds = ShadowBounds(
            self.cfg.shadow_min_windows,
            self.cfg.max_alert_rate_ratio,
            self.cfg.min_alert_rate,
            self.cfg.max_latency_ratio,
        )
        self.wake = threading.Event()  # set by the MQTT mirror on a new timestamp, or to check now
        self.feed: queue.Queue[tuple[np.ndarray, np.ndarray, float, float]] = queue.Queue(SHADOW_QUEUE)
        self._shadow: Candidate | None = None
        self._swap: Candidate | None = None
        self._swap_lock = threading.Lock()
        self._last_refusal: tuple[int | None, str] | None = None
        self.scoring_failed = threading.Event()
        self.configured_bundle = config.model.bundle  # the bundle installed with the device: the last fallback
        self.settled: Callable[[], bool] = lambda: True  # the MQTT mirror's: its retained burst has arrived
        # Whether there is a repository at all (the MQTT mirror holds a timestamp): a broker no repository
        # has been mirrored to yet is not an unreachable repository.
        self.published: Callable[[], bool] = lambda: True
        self.request_file: Path | None = store.state_file.with_name(ROLLBACK_REQUEST)

    # --- called from the scoring thread -------------------------------------------------------------------

    def observe(self, windows: np.ndarray, scores: np.ndarray, seconds: float, threshold: float) -> None:
        """Detector observer: while a candidate shadows, hand it each batch (never blocking)."""
        if self._shadow is None:
            return
        # When full, the shadow sees fewer windows: scoring never waits for it.
        with contextlib.suppress(queue.Full):
            self.feed.put_nowait((windows, scores, seconds, threshold))

    def take_swap(self) -> Candidate | None:
        with self._swap_lock:
            candidate, self._swap = self._swap, None
            return candidate

    # --- the update thread ------------------------------------------------------------------------------

    def _message(self, step: str, release: int | None, reason: str, extra: dict[str, object]) -> bytes:
        active = self.store.state.active
        message: dict[str, object] = {
            "schema": SCHEMA, "agent": self.agent_id, "group": self.cfg.group, "step": step, "release": release,
            "reason": reason, "running": active.release if active is not None else 0,
        }  # fmt: skip
        message.update(extra)
        message["time"] = round(time.time(), 3)
        return json.dumps(message, separators=(",", ":")).encode()

    def say(self, step: Step, release: int | None, reason: str = "", **extra: object) -> None:
        self.store.state.record(step, release, reason)
        self.store.save()
        self.publish(self._message(step, release, reason, extra))
        log = logger.warning if step in ("rejected", "rolled_back") else logger.info
        log("update: %s release %s%s", step, release, f": {reason}" if reason else "")

    def run(self, stop: threading.Event) -> None:
        self._say_current()
        next_check = 0.0  # check once at start
        while not stop.is_set():
            woken = self.wake.wait(TICK_S)
            if stop.is_set():
                return
            try:
                self._probation()
                if self.request_file is not None and self.request_file.exists():
                    self.request_file.unlink()
                    self._roll_back("rolled back by hand (edgevae-agent rollback)")
                if woken or time.monotonic() >= next_check:
                    self.wake.clear()
                    next_check = time.monotonic() + self.cfg.poll_s
                    self._check(stop)
            except Exception:
                # Updates may fail; scoring goes on with the model it has.
                logger.exception("model update failed; the running model goes on")

    def _say_current(self) -> None:
        """Publish the state as it stands at start (retained): which group the device is in and what it runs,
        for the fleet tools, and e.g. a rollback made while recovering."""
        state = self.store.state
        release = state.history[-1]["release"] if state.history else None
        self.publish(self._message(state.step, release, state.reason, {}))

    def _probation(self) -> None:
        state = self.store.state
        if state.step != "probation" or state.active is None:
            return
        if self.scoring_failed.is_set():
            self._roll_back("scoring failed within the probation period")
        elif time.time() >= state.probation_until:
            self.say("committed", state.active.release, "probation passed")

    def _check(self, stop: threading.Event) -> None:
        if self.store.state.step in ("shadow", "probation"):
            return
        deadline = time.monotonic() + 10.0
        while not self.settled() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.1)
        if not self.published():
            logger.debug("update: no repository mirrored to the broker yet")
            return
        outcome = self.verifier.check(self.device())
        if outcome is None:
            return
        if isinstance(outcome, Refused):
            self._refuse(outcome)
            return
        release = outcome.release.release
        if release in self.store.state.refused:
            return  # rejected or rolled back before: pushing it again changes nothing
        self.say("received", release, model=f"{outcome.release.model_id} {outcome.release.model_version}")
        self.say("verified", release)
        candidate = self._prepare(outcome)
        if candidate is None:
            return
        self._shadow_run(candidate, stop)

    def _refuse(self, refused: Refused) -> None:
        key = (refused.release, refused.check)
        if key == self._last_refusal:
            return  # said once; the repository has not changed its mind
        self._last_refusal = key
        self.say("rejected", refused.release, f"{refused.check}: {refused.reason}", check=refused.check)
        if refused.release is not None and refused.check not in ("unreachable", "expired"):
            self.store.state.refused = sorted({*self.store.state.refused, refused.release})
            self.store.save()

    def _prepare(self, verified: Verified) -> Candidate | None:
        release = verified.release
        try:
            folder = self.store.stage(release.release, verified.bundle_file)
            bundle = load_bundle(folder)
        except Exception as exc:
            self._reject(release.release, f"stage: {exc}")
            return None
        mismatch = release_mismatch(release, bundle.manifest)
        if mismatch:
            bundle.close()
            self._reject(release.release, f"mix-and-match: {mismatch}")
            return None
        installed = Installed(release.release, str(folder), release.model_id, release.model_version)
        self.store.state.candidate = installed
        self.say("staged", release.release)
        try:
            backend = create_backend(bundle.model_path, self.backend_key, self.backend_options)
        except Exception as exc:
            bundle.close()
            self._reject(release.release, f"load: {exc}")
            return None
        candidate = Candidate(installed, bundle, backend)
        failed = self_test(backend, bundle.root, bundle.manifest.golden, bundle.manifest.threshold.value)
        if failed:
            candidate.close()
            self._reject(release.release, f"self-test: {failed}")
            return None
        failed = self._detection_self_test(candidate)
        if failed:
            candidate.close()
            self._reject(release.release, f"detection self-test: {failed}", selftest=candidate.selftest)
            return None
        return candidate

    def _detection_self_test(self, candidate: Candidate) -> str | None:
        """The candidate's detection self-test (edgevae.agent.health), seeded with the release number."""
        if not self.selftest.enabled:
            return None
        bundle = candidate.bundle
        found = normal_windows(bundle.root, bundle.manifest, self.selftest.windows, candidate.installed.release)
        if found is None:
            return None
        windows, source = found
        report = detection_self_test(
            candidate.backend, bundle.manifest, windows, self.agent_id, source, self.selftest.magnitude
        )
        candidate.selftest = summary(report)
        return candidate_verdict(report, self.cfg.selftest_max_normal_flagged, self.cfg.selftest_min_caught)

    def _reject(self, release: int, reason: str, **extra: object) -> None:
        state = self.store.state
        state.candidate = None
        state.refused = sorted({*state.refused, release})
        self.say("rejected", release, reason, **extra)

    def _shadow_run(self, candidate: Candidate, stop: threading.Event) -> None:
        release = candidate.installed.release
        if candidate.selftest:
            self.say("shadow", release, selftest=candidate.selftest)
        else:
            self.say("shadow", release)
        stats = ShadowStats()
        threshold = candidate.manifest.threshold.value
        while not self.feed.empty():
            self.feed.get_nowait()  # batches from before the candidate was ready
        self._shadow = candidate
        started = time.monotonic()
        failed: str | None = None
        try:
            while not stop.is_set():
                done = time.monotonic() - started >= self.cfg.shadow_s and stats.windows >= self.bounds.min_windows
                failed = verdict(stats, self.bounds) if stats.non_finite or done else None
                if failed or done:
                    break
                try:
                    windows, scores, seconds, active_threshold = self.feed.get(timeout=0.2)
                except queue.Empty:
                    continue
                t0 = time.perf_counter()
                try:
                    cand = candidate.backend.run(windows).score
                except Exception as exc:  # a model that cannot score what the live one scores fails its shadow
                    failed = f"scoring failed on a batch of {len(windows)} windows: {exc}"
                    break
                stats.observe(scores, active_threshold, seconds, cand, threshold, time.perf_counter() - t0)
        finally:
            self._shadow = None
        if stop.is_set():
            candidate.close()  # the restart drops it (ModelStore.recover)
            return
        if failed:
            candidate.close()
            state = self.store.state
            state.candidate = None
            state.refused = sorted({*state.refused, release})
            self.say("rolled_back", release, f"shadow: {failed}", shadow=stats.summary())
            return
        with self._swap_lock:
            self._swap = candidate
        logger.info("update: release %d passed shadow %s; swapping", release, stats.summary())

    def committed(self, candidate: Candidate) -> None:
        """Called by the scoring thread once it scores with `candidate`."""
        self.scoring_failed.clear()  # failures of the model before do not count against this one
        if candidate.rollback:
            return
        self.store.commit(candidate.installed, self.cfg.probation_s)
        step: Step = "probation" if self.cfg.probation_s > 0 else "committed"
        self.say(step, candidate.installed.release)
        self.store.prune()

    def _roll_back(self, reason: str) -> None:
        if self.store.state.active is None:
            logger.warning("update: nothing to roll back to: the agent runs the bundle it was installed with")
            return
        previous = self.store.state.previous
        bad = self.store.roll_back(reason)
        path = Path(previous.path) if previous else None
        self.say("rolled_back", bad.release if bad else None, reason)
        self.hand_back(path, previous)

    def hand_back(self, path: Path | None, installed: Installed | None) -> None:
        """Load the previous model (or the configured bundle) and hand it to the scoring thread."""
        bundle = load_bundle(path if path is not None else self.configured_bundle)
        backend = create_backend(bundle.model_path, self.backend_key, self.backend_options)
        target = installed or Installed(0, str(bundle.root), bundle.manifest.model_id, bundle.manifest.model_version)
        with self._swap_lock:
            self._swap = Candidate(target, bundle, backend, rollback=True)
