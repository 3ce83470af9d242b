"""The shadow verdict on a candidate model, one row per rule."""

from __future__ import annotations

import numpy as np
import pytest

from edgevae.agent.shadow import ShadowBounds, ShadowStats, verdict


def stats(candidate: list[float], active: list[float], candidate_s: float = 1.0, active_s: float = 1.0) -> ShadowStats:
    s = ShadowStats()
    s.observe(np.array(active), 1.0, active_s, np.array(candidate), 1.0, candidate_s)
    return s


@pytest.mark.parametrize(
    ("case", "candidate", "active", "times", "expected"),
    [
        ("the same behaviour", [0.1] * 99 + [2.0], [0.1] * 99 + [2.0], (1.0, 1.0), None),
        ("one NaN", [0.1] * 99 + [float("nan")], [0.1] * 100, (1.0, 1.0), "1 of 100 windows scored NaN"),
        ("an infinity", [float("inf")] + [0.1] * 99, [0.1] * 100, (1.0, 1.0), "NaN or infinity"),
        (
            "alert rate 50 times the active's",
            [2.0] * 50 + [0.1] * 50,
            [2.0] + [0.1] * 99,
            (1.0, 1.0),
            "would-be alert rate 0.5",
        ),
        ("a higher rate within the floor", [2.0] + [0.1] * 99, [0.1] * 100, (1.0, 1.0), None),
        ("nine times the active's rate", [2.0] * 9 + [0.1] * 91, [2.0] + [0.1] * 99, (1.0, 1.0), None),
        ("six times slower", [0.1] * 100, [0.1] * 100, (6.0, 1.0), "6.0 x slower"),
        ("four times slower", [0.1] * 100, [0.1] * 100, (4.0, 1.0), None),
    ],
)
def test_verdict(
    case: str, candidate: list[float], active: list[float], times: tuple[float, float], expected: str | None
) -> None:
    got = verdict(stats(candidate, active, *times), ShadowBounds())
    assert got is None if expected is None else expected in str(got), got
