"""Scoring on its own thread decides exactly what `Detector.step` decides, in order, with pushes in between
launch and collect; a backend failure surfaces at collect and its windows are not retried. Real ONNX Runtime."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import STRIDE, WINDOW, expected_alerts, reference_scores, stream, timestamps, windows_for

from edgevae.agent.backends import ScoreOutputs, create_backend
from edgevae.agent.backends.base import Backend
from edgevae.agent.bundle import Manifest, load_bundle
from edgevae.agent.detector import Detector, WindowResult
from edgevae.agent.scoring import ScoringThread
from edgevae.core.errors import BackendError

ROWS = 120


@pytest.fixture
def model(bundle: Path) -> Iterator[tuple[Manifest, Backend]]:
    loaded = load_bundle(bundle)
    backend = create_backend(loaded.model_path)
    yield loaded.manifest, backend
    backend.close()


class ThreadRecordingBackend:
    """The real backend, noting the thread each batch ran on."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.key = inner, inner.key
        self.threads: set[str] = set()

    def run(self, batch: np.ndarray) -> ScoreOutputs:
        self.threads.add(threading.current_thread().name)
        return self.inner.run(batch)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("every", "max_batch"), [(1, 256), (7, 3), (25, 256)])
def test_launch_and_collect_decide_what_step_decides(
    model: tuple[Manifest, Backend], every: int, max_batch: int
) -> None:
    manifest, inner = model
    backend = ThreadRecordingBackend(inner)
    detector = Detector(manifest, backend, max_batch=max_batch)
    scoring = ScoringThread(detector)
    streams = {"calm": stream(ROWS), "faulty": stream(ROWS, fault=("pressure", 40, 70), phase=1.0)}
    ts = timestamps(ROWS)
    windows: list[WindowResult] = []
    events = []
    for i in range(ROWS):
        for device, values in streams.items():
            detector.push(device, float(ts[i]), values[i])  # pushed while the previous batch may be scoring
        if i % every == 0:
            step = scoring.collect()
            windows += step.windows
            events += step.events
            scoring.launch()
    step = scoring.collect()
    windows += step.windows
    events += step.events
    scoring.launch()
    step = scoring.collect()
    windows += step.windows
    events += step.events
    scoring.close()
    assert not scoring.busy
    assert detector.pending == 0
    for device, values in streams.items():
        mine = [w for w in windows if w.device == device]
        assert [w.index for w in mine] == sorted(w.index for w in mine), "decided in the order taken"
        assert len(mine) == windows_for(ROWS)
        np.testing.assert_allclose([w.score for w in mine], reference_scores(values)[0], rtol=1e-5)
    faulty = [w for w in windows if w.device == "faulty"]
    assert [(e.type, faulty.index(e.window)) for e in events] == expected_alerts(streams["faulty"])
    assert backend.threads
    assert all(name.startswith("scoring") for name in backend.threads), "off the caller's thread"


def test_a_failing_backend_raises_at_collect_and_its_windows_are_gone(model: tuple[Manifest, Backend]) -> None:
    manifest, inner = model

    class Failing:
        key = "failing"

        def run(self, batch: np.ndarray) -> ScoreOutputs:
            msg = "the runtime fell over"
            raise BackendError(msg)

        def close(self) -> None:
            inner.close()

    detector = Detector(manifest, Failing())
    scoring = ScoringThread(detector)
    for t, row in zip(timestamps(WINDOW), stream(WINDOW), strict=True):
        detector.push("d", float(t), row)
    scoring.launch()
    with pytest.raises(BackendError, match="fell over"):
        scoring.collect()
    assert (scoring.busy, detector.pending, detector.windows_scored) == (False, 0, 0)
    assert scoring.collect().windows == [], "nothing left to retry"
    scoring.close()


def test_a_second_launch_before_collect_is_refused(model: tuple[Manifest, Backend]) -> None:
    manifest, backend = model
    detector = Detector(manifest, backend)
    scoring = ScoringThread(detector)
    for t, row in zip(timestamps(WINDOW + STRIDE), stream(WINDOW + STRIDE), strict=True):
        detector.push("d", float(t), row)
        if detector.pending and not scoring.busy:
            scoring.launch()
    assert detector.pending == 1
    with pytest.raises(RuntimeError, match="collect"):
        scoring.launch()
    assert len(scoring.collect().windows) == 1
    scoring.close()
