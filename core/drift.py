"""Drift from what the model was trained on: readings outside the training range, and scores whose
distribution has moved away from the calibration scores. Arrays in, numbers out; the callers keep the data.

Inputs. `ChannelRanges.fit` summarises each channel's training rows (min, max, the 0.5 % and 99.5 %
quantiles, mean and std). `out_of_range` counts, per channel, the new rows outside
[min - tolerance * span, max + tolerance * span] with span = max - min and `RANGE_TOLERANCE` = 0.1: a
reading a tenth of the training span beyond what training saw is not a rounding matter. How far outside is
the median distance of those rows from min (or max), in spans, so "2.8" reads "2.8 training spans below".
A channel is out of range when at least `OUTSIDE_FRACTION` of its rows are: single spikes are what the
detector itself is for; drift is a lasting move.

Scores. `score_shift` compares recent scores with the calibration scores, known by their quantiles at
evenly spaced levels (`score_quantiles`), with the population stability index over `PSI_BINS` bins cut at
the calibration deciles, and the Kolmogorov-Smirnov distance to the calibration CDF interpolated from the
quantiles. The PSI thresholds are the conventional ones from credit scoring, where the index comes from:
below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one. Under `MIN_SCORES` recent
scores there is no verdict ("insufficient"): with ten bins, fewer than ten scores a bin make the index noise.
The verdict is one-sided: scores that moved lower (the recent median below the calibration median) keep
their PSI and say "lower" but count as "ok". The model then reconstructs the input better than the held-out
normal windows it was calibrated on, as it does its own training rows, and no alert is at stake.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RANGE_TOLERANCE = 0.1  # in training spans beyond min and max
OUTSIDE_FRACTION = 0.1  # of a channel's rows outside its range for the channel to count as out of range
MIN_ROWS = 100  # readings before the inputs get a verdict
ROBUST_LEVELS = (0.005, 0.995)
# A channel whose training span is below this fraction of its magnitude was constant: any other value is
# outside, and no distance in spans is defined (it would be a division by ~0).
CONSTANT_REL = 1e-6

QUANTILE_LEVELS = 101  # calibration-score quantiles kept: every percentile, 0 to 100
PSI_BINS = 10
PSI_EPSILON = 1e-4  # stands in for an empty bin's fraction, so its log term stays finite
PSI_MODERATE = 0.1
PSI_SHIFT = 0.25
MIN_SCORES = 100

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class ChannelRanges:
    """Per-channel statistics of the training rows, each an array in `names` order."""

    names: tuple[str, ...]
    min: Array
    max: Array
    p005: Array
    p995: Array
    mean: Array
    std: Array
    rows: int  # training rows they summarise

    @classmethod
    def fit(cls, values: npt.ArrayLike, names: Sequence[str]) -> ChannelRanges:
        """The ranges of `values` (rows, channels), finite, one column per name."""
        rows = _rows(values, len(names), "training values")
        if len(rows) == 0 or not np.isfinite(rows).all():
            msg = f"training values: expected at least one row of finite values, got shape {rows.shape}"
            raise ValueError(msg)
        low, high = np.quantile(rows, ROBUST_LEVELS, axis=0)
        return cls(
            tuple(names), rows.min(axis=0), rows.max(axis=0), low, high, rows.mean(axis=0), rows.std(axis=0), len(rows)
        )

    @property
    def span(self) -> Array:
        return self.max - self.min

    @property
    def constant(self) -> npt.NDArray[np.bool_]:
        """Channels that did not vary in training (see CONSTANT_REL)."""
        return self.span <= _constant_floor(self)

    def bounds(self, tolerance: float = RANGE_TOLERANCE) -> tuple[Array, Array]:
        """The band a reading must fall in, per channel; a constant channel's band is its value +- rounding."""
        margin = np.maximum(tolerance * self.span, _constant_floor(self))
        return self.min - margin, self.max + margin


@dataclass(frozen=True, eq=False)
class RangeCheck:
    """Per channel: how many finite readings were checked, the fractions below and above the band, and the
    median distance of those rows from the training min (max), in spans (NaN: none, or a constant channel)."""

    rows: npt.NDArray[np.int64]
    below: Array
    above: Array
    below_spans: Array
    above_spans: Array

    @property
    def outside(self) -> Array:
        return self.below + self.above

    def flagged(self, fraction: float = OUTSIDE_FRACTION) -> npt.NDArray[np.bool_]:
        """Channels with at least `fraction` of their rows outside the band."""
        return (self.rows > 0) & (self.outside >= fraction)


def out_of_range(values: npt.ArrayLike, ranges: ChannelRanges, tolerance: float = RANGE_TOLERANCE) -> RangeCheck:
    """Which fraction of the rows of `values` (rows, channels) lies outside each channel's band, and how far.

    Non-finite readings are not counted (the agent refuses them before scoring anyway).

    >>> r = ChannelRanges.fit([[0.0, 5.0], [10.0, 5.0]], ["flow", "valve"])
    >>> check = out_of_range([[-20.0, 5.0], [5.0, 5.0], [10.5, 5.0], [11.5, 6.0]], r)
    >>> check.below.tolist(), check.above.tolist(), check.below_spans.tolist()
    ([0.25, 0.0], [0.25, 0.25], [2.0, nan])
    """
    rows = _rows(values, len(ranges.names), "values")
    low, high = ranges.bounds(tolerance)
    finite = np.isfinite(rows)
    count = finite.sum(axis=0)
    below, above = rows < low, rows > high  # NaN compares False: not counted
    denominator = np.maximum(count, 1)
    span = np.where(ranges.constant, np.nan, ranges.span)
    return RangeCheck(
        count.astype(np.int64),
        below.sum(axis=0) / denominator,
        above.sum(axis=0) / denominator,
        _median_where(ranges.min - rows, below) / span,
        _median_where(rows - ranges.max, above) / span,
    )


def score_quantiles(scores: npt.ArrayLike, levels: int = QUANTILE_LEVELS) -> Array:
    """The quantiles of finite `scores` at `levels` evenly spaced levels from 0 to 1: the compact form of the
    calibration scores that `score_shift` compares with."""
    array = np.asarray(scores, dtype=np.float64).ravel()
    if len(array) == 0 or not np.isfinite(array).all() or levels < 2:
        msg = f"calibration scores: expected a non-empty array of finite scores and levels >= 2, got {array.shape}"
        raise ValueError(msg)
    return np.quantile(array, np.linspace(0.0, 1.0, levels))


def reference_cdf(x: npt.ArrayLike, quantiles: Array, strict: bool = False) -> Array:
    """P(score <= x) (P(score < x) when `strict`) under the distribution whose quantiles at evenly spaced
    levels are `quantiles`: linear between them, with an atom where several are equal (tied scores)."""
    points = np.asarray(x, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    upper = np.searchsorted(quantiles, points, side="left" if strict else "right")  # knots < x (<= x)
    inside = np.clip(upper, 1, len(quantiles) - 1)
    q0, q1 = quantiles[inside - 1], quantiles[inside]
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(q1 > q0, (points - q0) / (q1 - q0), 0.0)
    cdf = levels[inside - 1] + step * (levels[inside] - levels[inside - 1])
    return np.where(upper == 0, 0.0, np.where(upper >= len(quantiles), 1.0, cdf))


@dataclass(frozen=True)
class ScoreShift:
    """`psi` and `ks` are None under `min_scores` scores; `direction` compares the medians."""

    count: int
    psi: float | None
    ks: float | None
    verdict: str  # "ok", "moderate", "shift" or "insufficient"
    direction: str  # "higher", "lower" or "same": recent median against the calibration median


def psi_verdict(psi: float, moderate: float = PSI_MODERATE, shift: float = PSI_SHIFT) -> str:
    """The conventional reading of a PSI: stable below `moderate`, a significant shift above `shift`.

    >>> psi_verdict(0.05), psi_verdict(0.1), psi_verdict(0.25), psi_verdict(0.3)
    ('ok', 'moderate', 'moderate', 'shift')
    """
    if psi < moderate:
        return "ok"
    return "moderate" if psi <= shift else "shift"


def score_shift(
    recent: npt.ArrayLike,
    quantiles: npt.ArrayLike,
    bins: int = PSI_BINS,
    min_scores: int = MIN_SCORES,
    epsilon: float = PSI_EPSILON,
) -> ScoreShift:
    """PSI and KS of `recent` scores against the calibration distribution given by its `quantiles`.

    A non-finite score counts as the highest there is: the model overflowed on the window, which is as far
    from calibration as a score gets (the same reading as `Threshold.is_anomalous`).
    """
    ref = np.asarray(quantiles, dtype=np.float64)
    scores = np.nan_to_num(np.asarray(recent, dtype=np.float64).ravel(), nan=np.inf, posinf=np.inf, neginf=-np.inf)
    median = float(np.median(scores)) if len(scores) else math.nan
    ref_median = float(np.interp(0.5, np.linspace(0.0, 1.0, len(ref)), ref))
    direction = "higher" if median > ref_median else "lower" if median < ref_median else "same"
    if len(scores) < min_scores:
        return ScoreShift(len(scores), None, None, "insufficient", direction)
    psi = population_stability(scores, ref, bins, epsilon)
    verdict = "ok" if direction == "lower" else psi_verdict(psi)
    return ScoreShift(len(scores), psi, ks_distance(scores, ref), verdict, direction)


def population_stability(scores: Array, quantiles: Array, bins: int = PSI_BINS, epsilon: float = PSI_EPSILON) -> float:
    """sum((actual - expected) * ln(actual / expected)) over bins cut at the reference's 1/bins quantiles.

    Tied reference quantiles merge their bins, so a reference with constant scores has two bins: at the
    constant and above it.
    """
    levels = np.linspace(0.0, 1.0, len(quantiles))
    edges = np.unique(np.interp(np.arange(1, bins) / bins, levels, quantiles))
    expected = np.diff(np.concatenate([[0.0], reference_cdf(edges, quantiles), [1.0]]))
    # Bin i is (edges[i-1], edges[i]], as the CDF is P(score <= x).
    actual = np.bincount(np.searchsorted(edges, scores, side="left"), minlength=len(edges) + 1) / len(scores)
    expected, actual = np.maximum(expected, epsilon), np.maximum(actual, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_distance(scores: Array, quantiles: Array) -> float:
    """The largest gap between the empirical CDF of `scores` and the reference CDF.

    Both are piecewise (steps at the scores, atoms at tied quantiles), so the gap is largest at one of the
    scores or quantiles, on one side or the other of it: both sides are compared there.
    """
    ordered = np.sort(scores)
    points = np.unique(np.concatenate([ordered, quantiles]))
    n = len(ordered)
    at = np.abs(np.searchsorted(ordered, points, side="right") / n - reference_cdf(points, quantiles))
    before = np.abs(np.searchsorted(ordered, points, side="left") / n - reference_cdf(points, quantiles, strict=True))
    return float(max(at.max(), before.max()))


def _rows(values: npt.ArrayLike, channels: int, what: str) -> Array:
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != channels:
        msg = f"{what}: expected an array shaped (rows, {channels}) in the channel order, got {rows.shape}"
        raise ValueError(msg)
    return rows


def _constant_floor(ranges: ChannelRanges) -> Array:
    magnitude = np.maximum(1.0, np.maximum(np.abs(ranges.min), np.abs(ranges.max)))
    return np.asarray(CONSTANT_REL * magnitude, dtype=np.float64)


def _median_where(distance: Array, mask: npt.NDArray[np.bool_]) -> Array:
    """Per column, the median of `distance` where `mask`; NaN for a column with no such row."""
    # One Python step per channel, not per row: np.nanmedian would warn on every empty column.
    out = np.full(distance.shape[1], np.nan)
    for column in np.flatnonzero(mask.any(axis=0)):
        out[column] = np.median(distance[mask[:, column], column])
    return out
