"""Shadow scoring: a candidate model scores the windows the active model scores, raises nothing, and is
judged on what it would have done.

The candidate fails if it scores any window NaN or infinite, if its would-be alert rate (windows above
its own threshold) is far above the active model's on the same windows, or if it is far slower. Rates
below `min_alert_rate` always pass: on a quiet plant both models are near zero and their ratio is noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ShadowBounds:
    min_windows: int = 100
    max_alert_rate_ratio: float = 10.0
    min_alert_rate: float = 0.01
    max_latency_ratio: float = 5.0


@dataclass
class ShadowStats:
    windows: int = 0
    non_finite: int = 0
    candidate_above: int = 0  # windows above the candidate's threshold
    active_above: int = 0
    candidate_seconds: float = 0.0
    active_seconds: float = 0.0
    scores: list[float] = field(default_factory=list)  # a bounded sample, for the report

    def observe(
        self, active_scores: np.ndarray, active_threshold: float, active_s: float,
        candidate_scores: np.ndarray, candidate_threshold: float, candidate_s: float,
    ) -> None:  # fmt: skip
        finite = np.isfinite(candidate_scores)
        self.windows += len(candidate_scores)
        self.non_finite += int((~finite).sum())
        self.candidate_above += int((~(candidate_scores <= candidate_threshold)).sum())
        self.active_above += int((~(active_scores <= active_threshold)).sum())
        self.candidate_seconds += candidate_s
        self.active_seconds += active_s
        if len(self.scores) < 1000:
            self.scores.extend(candidate_scores[finite][: 1000 - len(self.scores)].tolist())

    @property
    def candidate_rate(self) -> float:
        return self.candidate_above / self.windows if self.windows else 0.0

    @property
    def active_rate(self) -> float:
        return self.active_above / self.windows if self.windows else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "windows": self.windows,
            "non_finite": self.non_finite,
            "candidate_alert_rate": round(self.candidate_rate, 6),
            "active_alert_rate": round(self.active_rate, 6),
            "latency_ratio": round(self.candidate_seconds / self.active_seconds, 3) if self.active_seconds else 0.0,
        }


def verdict(stats: ShadowStats, bounds: ShadowBounds) -> str | None:
    """Why the candidate fails its shadow period, or None when it passes. Call with enough windows.

    >>> s = ShadowStats(windows=1000, candidate_above=500, active_above=2)
    >>> print(verdict(s, ShadowBounds()))
    would-be alert rate 0.5 against the active model's 0.002 on the same 1000 windows (bound: 10 x, or 0.01)
    """
    if stats.non_finite:
        return f"{stats.non_finite} of {stats.windows} windows scored NaN or infinity"
    limit = max(bounds.min_alert_rate, bounds.max_alert_rate_ratio * stats.active_rate)
    if stats.candidate_rate > limit:
        return (
            f"would-be alert rate {stats.candidate_rate:.3g} against the active model's {stats.active_rate:.3g} "
            f"on the same {stats.windows} windows "
            f"(bound: {bounds.max_alert_rate_ratio:g} x, or {bounds.min_alert_rate:g})"
        )
    if stats.active_seconds > 0 and stats.candidate_seconds > bounds.max_latency_ratio * stats.active_seconds:
        ratio = stats.candidate_seconds / stats.active_seconds
        return f"{ratio:.1f} x slower than the active model (bound {bounds.max_latency_ratio:g} x)"
    return None
