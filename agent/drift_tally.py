"""`drift_warnings` for a file read in chunks: the same figures, gathered as counts instead of kept rows.

Out-of-range fractions are counts per channel, exact. How far outside is a median, which needs the values:
each channel and side keeps the distances of its rows outside, exactly up to SPAN_SAMPLE of them, and beyond
that every 2nd, 4th, ... of them in file order (a systematic sample, the same whatever the chunk size). A
file with more than SPAN_SAMPLE rows outside on one side of one channel may thus print a slightly different
"by 2.8x the training span" than the whole-array `drift_warnings`; the fractions and verdicts are the same.

Scores: the PSI is a histogram over the calibration bins, exact. The direction compares the scores' median
with the calibration median, which only needs how many scores lie below and above it and the two scores
nearest it, exact too. The KS distance is not computed (the warnings do not print it, and it would need
every score): `score_shift().ks` is None.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgevae.agent.bundle import Manifest
from edgevae.agent.distribution import DriftReference
from edgevae.agent.drift import reference_of, warning_lines
from edgevae.core.drift import MIN_SCORES, PSI_BINS, PSI_EPSILON, RangeCheck, ScoreShift, psi_verdict, reference_cdf

SPAN_SAMPLE = 1 << 16  # distances kept per channel and side: 512 kB each


class _Sample:
    """The values added whose position (counted from the first value added) is a multiple of `step`; `step`
    doubles, halving what is kept, whenever more than `capacity` are kept."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.step, self.seen = capacity, 1, 0
        self.kept: list[np.ndarray] = []
        self.size = 0

    def add(self, values: np.ndarray) -> None:
        piece = values[(-self.seen) % self.step :: self.step]
        self.kept.append(piece)
        self.seen += len(values)
        self.size += len(piece)
        while self.size > self.capacity:
            every = np.concatenate(self.kept)[::2]
            self.kept, self.size, self.step = [every], len(every), self.step * 2

    def median(self) -> float:
        return float(np.median(np.concatenate(self.kept))) if self.size else math.nan


class DriftTally:
    """Add a file's readings and window scores in any chunks; `warnings()` then reads like `drift_warnings`."""

    def __init__(self, reference: DriftReference, span_sample: int = SPAN_SAMPLE) -> None:
        self.reference = reference
        ranges = reference.ranges
        channels = len(ranges.names)
        self.low, self.high = ranges.bounds()
        self.count = np.zeros(channels, dtype=np.int64)
        self.below = np.zeros(channels, dtype=np.int64)
        self.above = np.zeros(channels, dtype=np.int64)
        self.below_spans = [_Sample(span_sample) for _ in range(channels)]
        self.above_spans = [_Sample(span_sample) for _ in range(channels)]
        quantiles = reference.score_quantiles
        # The bins of core.drift.population_stability, and the calibration median that `direction` compares with.
        self.edges = np.unique(
            np.interp(np.arange(1, PSI_BINS) / PSI_BINS, np.linspace(0.0, 1.0, len(quantiles)), quantiles)
        )
        self.bins = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.ref_median = float(np.interp(0.5, np.linspace(0.0, 1.0, len(quantiles)), quantiles))
        self.scores = self.scores_below = self.scores_above = 0
        self.nearest_below, self.nearest_above = -math.inf, math.inf

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> DriftTally | None:
        """None when the bundle carries no distribution (then there is nothing to warn of)."""
        reference = reference_of(manifest)
        return None if reference is None else cls(reference)

    def add_values(self, values: npt.ArrayLike) -> None:
        """Readings (rows, channels) in the manifest's channel order."""
        rows = np.asarray(values, dtype=np.float64)
        ranges = self.reference.ranges
        self.count += np.isfinite(rows).sum(axis=0)
        below, above = rows < self.low, rows > self.high  # NaN compares False: not counted
        self.below += below.sum(axis=0)
        self.above += above.sum(axis=0)
        for c in np.flatnonzero(below.any(axis=0)).tolist():
            self.below_spans[c].add(ranges.min[c] - rows[below[:, c], c])
        for c in np.flatnonzero(above.any(axis=0)).tolist():
            self.above_spans[c].add(rows[above[:, c], c] - ranges.max[c])

    def add_scores(self, scores: npt.ArrayLike) -> None:
        # A non-finite score counts as the highest there is, as in core.drift.score_shift.
        block = np.nan_to_num(np.asarray(scores, dtype=np.float64).ravel(), nan=np.inf, posinf=np.inf, neginf=-np.inf)
        self.bins += np.bincount(np.searchsorted(self.edges, block, side="left"), minlength=len(self.bins))
        self.scores += len(block)
        below, above = block[block < self.ref_median], block[block > self.ref_median]
        self.scores_below += len(below)
        self.scores_above += len(above)
        if len(below):
            self.nearest_below = max(self.nearest_below, float(below.max()))
        if len(above):
            self.nearest_above = min(self.nearest_above, float(above.min()))

    def range_check(self) -> RangeCheck:
        """core.drift.out_of_range of every row added."""
        denominator = np.maximum(self.count, 1)
        ranges = self.reference.ranges
        span = np.where(ranges.constant, np.nan, ranges.span)
        below_spans = np.array([s.median() for s in self.below_spans]) / span
        above_spans = np.array([s.median() for s in self.above_spans]) / span
        return RangeCheck(
            self.count.copy(), self.below / denominator, self.above / denominator, below_spans, above_spans
        )

    def score_shift(self) -> ScoreShift:
        """core.drift.score_shift of every score added, without the KS distance."""
        direction = self._direction()
        if self.scores < MIN_SCORES:
            return ScoreShift(self.scores, None, None, "insufficient", direction)
        expected = np.diff(np.concatenate([[0.0], reference_cdf(self.edges, self.reference.score_quantiles), [1.0]]))
        actual = self.bins / self.scores
        expected, actual = np.maximum(expected, PSI_EPSILON), np.maximum(actual, PSI_EPSILON)
        psi = float(np.sum((actual - expected) * np.log(actual / expected)))
        verdict = "ok" if direction == "lower" else psi_verdict(psi)
        return ScoreShift(self.scores, psi, None, verdict, direction)

    def warnings(self) -> list[str]:
        return warning_lines(self.reference, self.range_check(), self.score_shift())

    def _direction(self) -> str:
        """How np.median of the scores added compares with the calibration median, from the counts either side
        of it: the middle score(s) lie on one side of it, all that matters then, or straddle it, and are then
        the nearest scores on either side, known exactly."""
        n, ref = self.scores, self.ref_median
        if n == 0:
            return "same"  # the median of nothing is NaN, neither above nor below
        below_end, above_start = self.scores_below, n - self.scores_above  # where each side starts, sorted

        def at(i: int) -> tuple[int, float]:
            """The side of the i-th smallest score (-1, 0, 1) and its value (exact where it can be read)."""
            if i < below_end:
                return -1, self.nearest_below
            return (0, ref) if i < above_start else (1, self.nearest_above)

        side, value = at(n // 2)
        if n % 2 == 0:
            other, low = at(n // 2 - 1)
            if other != side:
                # Neighbours across a side's edge: the largest below and the smallest not below, or the like.
                value = float(np.median([low, value]))
                side = int(np.sign(value - ref)) if not math.isnan(value) else 0
        return ("lower", "same", "higher")[side + 1]
