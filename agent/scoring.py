"""Scoring on a thread of its own: the backend runs one batch of windows while the service's thread reads,
parses and pushes the next messages.

ONNX Runtime releases the GIL while it computes, so the two overlap. At most one batch is in flight, and its
windows are decided (debounce, alerts) on the service's thread, in the order they were taken, before the
next batch goes, so the result is the one `Detector.step` gives.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from edgevae.agent.backends.base import ScoreOutputs
from edgevae.agent.detector import Detector, Due, StepResult


class ScoringThread:
    """Used from the service's thread only."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._in_flight: tuple[Due, Future[list[tuple[ScoreOutputs, float]]]] | None = None

    @property
    def busy(self) -> bool:
        """A batch was launched and not collected yet."""
        return self._in_flight is not None

    def done(self) -> bool:
        """The launched batch has its scores (or failed): `collect` will not wait."""
        return self._in_flight is None or self._in_flight[1].done()

    def launch(self) -> None:
        """Take the due windows and start scoring them; collect the previous launch first."""
        if self._in_flight is not None:
            msg = "a batch is still in flight: collect() it first"
            raise RuntimeError(msg)
        due = self.detector.take()
        if len(due):
            self._in_flight = (due, self._executor.submit(self.detector.score, due))

    def collect(self) -> StepResult:
        """Wait for the launched windows' scores and decide them; an empty result when none are in flight.
        A backend failure discards them and raises its error here."""
        if self._in_flight is None:
            return StepResult()
        due, future = self._in_flight
        self._in_flight = None
        return self.detector.decide(due, future.result())

    def close(self) -> None:
        self._executor.shutdown(wait=True)
