"""Deciding: the threshold classification and the debounce state machine, table by table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgevae.core.decision import Debounce, Debouncer, Threshold, Transition


@pytest.mark.parametrize(
    ("threshold", "score", "anomalous"),
    [
        (1.0, 0.5, False),  # well below
        (1.0, 1.0, False),  # equal is not above
        (1.0, 1.0000001, True),  # just above
        (1.0, math.inf, True),  # overflowed score
        (1.0, math.nan, True),  # NaN from finite input means the model overflowed: as anomalous as it gets
        (0.0, 0.0, False),  # a zero threshold still needs a positive score
        (-1.0, 0.0, True),  # negative thresholds (NLL scores) work the same way
    ],
)
def test_classify(threshold: float, score: float, anomalous: bool) -> None:
    assert Threshold(threshold).classify(score) is anomalous
    # The vectorised rule (export's parity figures, evaluation) decides every case the same way.
    assert Threshold(threshold).is_anomalous(np.array([score])).tolist() == [anomalous]


OPEN, CLOSE, N = Transition.OPEN, Transition.CLOSE, Transition.NONE


@pytest.mark.parametrize(
    ("trigger", "clear", "windows", "expected"),
    [
        (1, 1, "0000", [N, N, N, N]),  # normal stream: nothing happens
        (1, 1, "1010", [OPEN, CLOSE, OPEN, CLOSE]),  # no debounce: every change is an event
        (3, 2, "1111", [N, N, OPEN, N]),  # opens on the third anomalous window, once (not one alert per window)
        (3, 2, "110111", [N, N, N, N, N, OPEN]),  # a normal window restarts the count towards opening
        (3, 2, "111 0 1 00", [N, N, OPEN, N, N, N, CLOSE]),  # one normal window inside an alert does not end it
        (2, 3, "11 000", [N, OPEN, N, N, CLOSE]),  # ends after `clear` normal windows in a row
        (2, 1, "11 0 11 0", [N, OPEN, CLOSE, N, OPEN, CLOSE]),  # a second alert needs a fresh run of `trigger`
        (2, 2, "11 1111111 00", [N, OPEN, N, N, N, N, N, N, N, N, CLOSE]),  # a long fault is one alert
    ],
)
def test_debounce(trigger: int, clear: int, windows: str, expected: list[Transition]) -> None:
    debounce = Debouncer(Debounce(trigger, clear))
    got = [debounce.update(w == "1") for w in windows.replace(" ", "")]
    assert got == expected


def test_debounce_state_follows_transitions() -> None:
    debounce = Debouncer(Debounce(trigger=2, clear=1))
    states = []
    for anomalous in (True, True, False):
        debounce.update(anomalous)
        states.append(debounce.is_open)
    assert states == [False, True, False]


@pytest.mark.parametrize(("trigger", "clear"), [(0, 1), (1, 0), (-1, 5), (1.5, 2), (True, 2)])
def test_debounce_rejects_counts_below_one(trigger: int, clear: int) -> None:
    with pytest.raises(ValueError, match="integers >= 1"):
        Debounce(trigger, clear)
