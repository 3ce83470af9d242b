"""Point-wise detection metrics as the SKAB leaderboard defines them, plus AUROC and average precision."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

# Every ratio below returns NaN when its denominator is zero (e.g. FAR on a file with no normal
# points). A 0 would read as "worst possible" or "no false alarms" and bias averages; NaN makes
# the undefined case visible and propagates into any mean that forgets to handle it.
UNDEFINED = math.nan

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Confusion:
    """Point counts. SKAB sums these over files before any ratio is taken, hence `__add__`."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _binary(values: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1, got shape {arr.shape}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans), got e.g. {arr[bad][:3].tolist()}")
    return arr.astype(bool)


def _labels_and_scores(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y = _binary(labels, "labels")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"scores must have the same shape as labels {y.shape}, got {s.shape}")
    if np.isnan(s).any():
        msg = "scores contain NaN; rank-based metrics need every score ordered"
        raise ValueError(msg)
    return y, s


def confusion(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> Confusion:
    """Count TP/FP/FN/TN point by point; 1 means anomalous. No point adjustment is applied."""
    y = _binary(labels, "labels")
    p = _binary(predictions, "predictions")
    if p.shape != y.shape:
        raise ValueError(f"predictions must have the same length as labels ({y.size}), got {p.size}")
    return Confusion(
        tp=int(np.count_nonzero(y & p)),
        fp=int(np.count_nonzero(~y & p)),
        fn=int(np.count_nonzero(y & ~p)),
        tn=int(np.count_nonzero(~y & ~p)),
    )


def trivial_flag_everything(labels: npt.ArrayLike) -> Confusion:
    """The baseline that flags every point: FAR is 100 and F1 depends only on the anomaly share."""
    y = _binary(labels, "labels")
    return confusion(y, np.ones_like(y))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else UNDEFINED


def f1(c: Confusion) -> float:
    """TP / (TP + (FN + FP) / 2), in [0, 1]; NaN when there are no positives and no alarms."""
    return _ratio(c.tp, c.tp + (c.fn + c.fp) / 2)


def far(c: Confusion) -> float:
    """False alarm rate in percent, 100 * FP / (FP + TN); NaN when there are no normal points."""
    return _ratio(100.0 * c.fp, c.fp + c.tn)


def mar(c: Confusion) -> float:
    """Missed alarm rate in percent, 100 * FN / (FN + TP); NaN when there are no anomalous points."""
    return _ratio(100.0 * c.fn, c.fn + c.tp)


def precision(c: Confusion) -> float:
    """TP / (TP + FP), in [0, 1]; NaN when nothing was flagged."""
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float:
    """TP / (TP + FN), in [0, 1]; equals 1 - MAR / 100. NaN when there are no anomalous points."""
    return _ratio(c.tp, c.tp + c.fn)


def average_ranks(values: npt.ArrayLike) -> FloatArray:
    """1-based ranks of the values, ties sharing the mean of the positions they span (mid-ranks).

    >>> average_ranks([10.0, 30.0, 20.0, 20.0])
    array([1. , 4. , 2.5, 2.5])
    """
    _, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    # A group of tied values spans the positions up to its cumulative count; its rank is their mean.
    ends = np.cumsum(counts)
    ranks: FloatArray = (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]
    return ranks


def auroc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve; higher scores mean more anomalous. NaN unless both classes occur.

    Computed as the Mann-Whitney statistic with mid-ranks, so a positive tied with a negative
    counts one half: the same value as the trapezoidal area under the tie-collapsed ROC curve.
    """
    y, s = _labels_and_scores(labels, scores)
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return UNDEFINED
    rank_sum = float(average_ranks(s)[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


class _Counts(NamedTuple):
    tps: FloatArray
    fps: FloatArray
    thresholds: FloatArray


def _counts_by_threshold(y: npt.NDArray[np.bool_], s: FloatArray) -> _Counts:
    """Cumulative TP and FP when flagging `score >= threshold`, one row per distinct score, descending."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Tied scores share one threshold, so only the last index of each run of equal scores counts.
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(y_sorted, dtype=np.float64)[last_of_run]
    fps = (last_of_run + 1.0) - tps
    return _Counts(tps, fps, s_sorted[last_of_run])


class PrCurve(NamedTuple):
    """Precision and recall per threshold, ordered like sklearn: thresholds ascending, recall falling.

    `precision` and `recall` have one more entry than `thresholds`: the final (recall 0,
    precision 1) point that anchors the curve.
    """

    precision: FloatArray
    recall: FloatArray
    thresholds: FloatArray


def precision_recall_curve(labels: npt.ArrayLike, scores: npt.ArrayLike) -> PrCurve:
    """Precision and recall of `score >= threshold` at every distinct score; needs at least one positive."""
    y, s = _labels_and_scores(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        msg = "precision_recall_curve needs at least one positive label; recall is undefined"
        raise ValueError(msg)
    tps, fps, thresholds = _counts_by_threshold(y, s)
    prec = tps / (tps + fps)
    rec = tps / n_pos
    return PrCurve(np.r_[prec[::-1], 1.0], np.r_[rec[::-1], 0.0], thresholds[::-1])


def auprc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision, sum_k (R_k - R_{k-1}) * P_k over distinct thresholds (step-wise, no interpolation).

    Matches sklearn's `average_precision_score`; ties are one threshold. NaN when there are no
    positives. The no-skill value is the positive share, not 0.5.
    """
    y, s = _labels_and_scores(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        return UNDEFINED
    tps, fps, _ = _counts_by_threshold(y, s)
    prec = tps / (tps + fps)
    rec_steps = np.diff(tps, prepend=0.0) / n_pos
    return float(np.sum(rec_steps * prec))


def summarize(
    confusion: Confusion,
    labels: npt.ArrayLike | None = None,
    scores: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """All metrics in one table row. FAR and MAR are percentages, the rest lie in [0, 1].

    `auroc` and `auprc` need `labels` and `scores` (concatenated over files); without them they
    are NaN, so every row has the same keys.
    """
    if (labels is None) != (scores is None):
        msg = "pass both labels and scores for auroc/auprc, or neither"
        raise ValueError(msg)
    row = {
        "f1": f1(confusion),
        "far": far(confusion),
        "mar": mar(confusion),
        "precision": precision(confusion),
        "recall": recall(confusion),
        "auroc": UNDEFINED,
        "auprc": UNDEFINED,
    }
    if labels is not None and scores is not None:
        row["auroc"] = auroc(labels, scores)
        row["auprc"] = auprc(labels, scores)
    return row
