"""The Detector: micro-batched scoring across devices, debounced alerts, gap resets; real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import (
    CHANNELS,
    WINDOW,
    expected_alerts,
    reference_scores,
    stream,
    timestamps,
    windows_for,
)

from edgevae.agent.backends import ScoreOutputs, create_backend
from edgevae.agent.bundle import Manifest, load_bundle
from edgevae.agent.detector import Detector
from edgevae.core.decision import Debounce
from edgevae.core.errors import BackendError


class CountingBackend:
    """The real ORT backend, with a record of every batch it was given."""

    def __init__(self, model_path: Path) -> None:
        self.inner = create_backend(model_path)
        self.key = self.inner.key
        self.batches: list[int] = []

    def run(self, batch: np.ndarray) -> ScoreOutputs:
        self.batches.append(batch.shape[0])
        return self.inner.run(batch)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def setup(bundle: Path) -> tuple[Manifest, CountingBackend]:
    loaded = load_bundle(bundle)
    return loaded.manifest, CountingBackend(loaded.model_path)


def test_one_backend_call_per_step_across_devices(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup
    detector = Detector(manifest, backend)
    values = stream(WINDOW)
    for device in range(10):
        for ts, row in zip(timestamps(WINDOW), values, strict=True):
            detector.push(f"d{device}", float(ts), row)
    assert detector.pending == 10
    result = detector.step()
    assert backend.batches == [10]  # ten devices, one call
    assert [w.device for w in result.windows] == [f"d{i}" for i in range(10)]
    assert detector.step().windows == []
    assert backend.batches == [10]  # nothing due: no call at all


def test_batches_are_capped_at_max_batch(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup
    detector = Detector(manifest, backend, max_batch=4)
    rows = WINDOW + 4 * 9  # ten windows for one device
    for ts, row in zip(timestamps(rows), stream(rows), strict=True):
        detector.push("d", float(ts), row)
    detector.step()
    assert backend.batches == [4, 4, 2]


def test_scores_match_the_reference_and_alerts_are_debounced(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup
    detector = Detector(manifest, backend, max_batch=3)
    rows = 120
    streams = {"calm": stream(rows), "faulty": stream(rows, fault=("pressure", 40, 70), phase=1.0)}
    results, events = [], []
    ts = timestamps(rows)
    for i in range(rows):
        for device, values in streams.items():
            detector.push(device, float(ts[i]), values[i])
        if i % 10 == 0:  # step at irregular points: decisions must not depend on batching
            step = detector.step()
            results += step.windows
            events += step.events
    step = detector.step()
    results += step.windows
    events += step.events
    for device, values in streams.items():
        scores, errors = reference_scores(values)
        mine = [w for w in results if w.device == device]
        assert len(mine) == windows_for(rows)
        np.testing.assert_allclose([w.score for w in mine], scores, rtol=1e-5)
        np.testing.assert_allclose(np.stack([w.channel_error for w in mine]), errors, rtol=1e-5)
    assert [e.device for e in events] == ["faulty", "faulty"]
    expected = expected_alerts(streams["faulty"])
    assert [e.type for e in events] == [t for t, _ in expected] == ["alert", "end"]
    faulty = [w for w in results if w.device == "faulty"]
    opened, ended = events
    assert opened.window is faulty[expected[0][1]]
    assert ended.window is faulty[expected[1][1]]
    assert opened.started_ts == next(w.end_ts for w in faulty if w.anomalous)
    assert ended.peak.score == max(w.score for w in faulty)
    assert int(np.argmax(ended.peak.channel_error)) == CHANNELS.index("pressure")
    assert [w.alert_open for w in faulty].count(True) == expected[1][1] - expected[0][1]


def test_debounce_override(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup
    detector = Detector(manifest, backend, debounce=Debounce(trigger=100, clear=1))
    rows = 120
    for ts, row in zip(timestamps(rows), stream(rows, fault=("temp", 40, 70)), strict=True):
        detector.push("d", float(ts), row)
    assert detector.step().events == []  # the fault is shorter than 100 windows


def test_a_long_gap_restarts_the_window(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup
    detector = Detector(manifest, backend, max_gap_periods=5)
    values = stream(2 * WINDOW)
    ts = np.concatenate([timestamps(WINDOW), timestamps(WINDOW, start=timestamps(WINDOW)[-1] + 6.0)])
    due = [detector.push("d", float(t), row) for t, row in zip(ts, values, strict=True)]
    # Without the reset, windows would be due at rows 7, 11 and 15; with it, at 7 and then 15.
    assert [i for i, d in enumerate(due) if d] == [WINDOW - 1, 2 * WINDOW - 1]
    assert detector.gap_resets == 1
    windows = detector.step().windows
    assert windows[1].start_ts == ts[WINDOW]


def test_gap_within_the_limit_keeps_the_window(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup
    detector = Detector(manifest, backend, max_gap_periods=5)
    ts = timestamps(WINDOW) + np.where(np.arange(WINDOW) >= 4, 4.0, 0.0)  # one 5 s step: allowed
    assert [detector.push("d", float(t), r) for t, r in zip(ts, stream(WINDOW), strict=True)][-1]
    assert detector.gap_resets == 0


def test_backend_returning_the_wrong_shape_is_an_error(setup: tuple[Manifest, CountingBackend]) -> None:
    manifest, backend = setup

    class Truncating:
        key = "truncating"

        def run(self, batch: np.ndarray) -> ScoreOutputs:
            out = backend.run(batch)
            return ScoreOutputs(out.score[:-1], out.channel_error[:-1])

        def close(self) -> None:
            backend.close()

    detector = Detector(manifest, Truncating())
    for ts, row in zip(timestamps(WINDOW), stream(WINDOW), strict=True):
        detector.push("d", float(ts), row)
    with pytest.raises(BackendError, match="expected"):
        detector.step()
    assert detector.pending == 0  # the failed windows are not retried forever


@pytest.mark.parametrize(
    "blocks",
    [[1] * 40, [40], [3, 17, 1, 19], [5, 35]],
)
@pytest.mark.parametrize("gap_at", [None, 12, 25])
def test_a_block_of_readings_scores_as_its_readings_one_by_one(
    setup: tuple[Manifest, CountingBackend], blocks: list[int], gap_at: int | None
) -> None:
    manifest, backend = setup
    rows = sum(blocks)
    values = stream(rows, fault=("pressure", 20, 30))
    ts = timestamps(rows)
    if gap_at is not None:
        ts[gap_at:] += 60.0  # a gap past max_gap_periods: the window restarts, one way or the other
    one, many = (Detector(manifest, backend, max_gap_periods=5) for _ in range(2))
    for t, row in zip(ts, values, strict=True):
        one.push("d", float(t), row)
    start = 0
    for n in blocks:
        many.push_block("d", ts[start : start + n], values[start : start + n])
        start += n
    assert many.pending == one.pending
    got, want = many.step(), one.step()
    key = [(w.index, w.start_ts, w.end_ts, w.score, w.alert_open) for w in want.windows]
    assert [(w.index, w.start_ts, w.end_ts, w.score, w.alert_open) for w in got.windows] == key
    assert [(e.type, e.window.index) for e in got.events] == [(e.type, e.window.index) for e in want.events]
    assert many.gap_resets == one.gap_resets
