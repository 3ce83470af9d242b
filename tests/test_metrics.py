"""Point-wise SKAB metrics, AUROC and average precision against hand-computed cases."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from edgevae.core.metrics import (
    Confusion,
    auprc,
    auroc,
    average_ranks,
    confusion,
    f1,
    far,
    mar,
    precision_recall_curve,
    summarize,
    trivial_flag_everything,
)

nan = math.nan


@pytest.mark.parametrize(
    ("labels", "predictions", "expected", "f1_", "far_", "mar_"),
    [
        # all correct: perfect F1, no false or missed alarms
        ([0, 0, 1, 1], [0, 0, 1, 1], Confusion(2, 0, 0, 2), 1.0, 0.0, 0.0),
        # all wrong: every normal flagged, every anomaly missed
        ([0, 0, 1, 1], [1, 1, 0, 0], Confusion(0, 2, 2, 0), 0.0, 100.0, 100.0),
        # one of each cell: F1 = 1 / (1 + (1 + 1) / 2)
        ([1, 1, 0, 0], [1, 0, 1, 0], Confusion(1, 1, 1, 1), 0.5, 50.0, 50.0),
        # no positives, nothing flagged: F1 and MAR are undefined, FAR is 0
        ([0, 0, 0], [0, 0, 0], Confusion(0, 0, 0, 3), nan, 0.0, nan),
        # no positives, one false alarm: F1 is 0, not undefined
        ([0, 0, 0], [0, 1, 0], Confusion(0, 1, 0, 2), 0.0, 100.0 / 3, nan),
        # only positives: FAR is undefined
        ([1, 1], [1, 0], Confusion(1, 0, 1, 0), 2.0 / 3, nan, 50.0),
        # booleans are accepted as 0/1
        ([False, True], [True, True], Confusion(1, 1, 0, 0), 2.0 / 3, 100.0, 0.0),
        # empty input: every ratio undefined
        ([], [], Confusion(0, 0, 0, 0), nan, nan, nan),
    ],
)
def test_confusion_and_ratios(
    labels: list[int], predictions: list[int], expected: Confusion, f1_: float, far_: float, mar_: float
) -> None:
    c = confusion(labels, predictions)
    assert c == expected
    np.testing.assert_allclose([f1(c), far(c), mar(c)], [f1_, far_, mar_], equal_nan=True)


def test_counts_are_summed_over_files_before_ratios() -> None:
    a = confusion([1, 0, 0, 0], [1, 0, 0, 0])  # F1 = 1
    b = confusion([1, 1, 0], [0, 0, 1])  # F1 = 0
    total = a + b
    assert total == Confusion(tp=1, fp=1, fn=2, tn=3)
    assert f1(total) == pytest.approx(1 / (1 + 1.5))  # not the mean of per-file F1s (0.5)


def test_flag_everything_on_a_537_percent_anomalous_split() -> None:
    labels = np.r_[np.ones(537, dtype=int), np.zeros(463, dtype=int)]
    c = trivial_flag_everything(labels)
    assert c == Confusion(tp=537, fp=463, fn=0, tn=0)
    row = summarize(c)
    # F1 = 2p / (1 + p) with p = 0.537: 0.69876, the 0.698 of the SKAB table (truncated)
    assert row["f1"] == pytest.approx(2 * 0.537 / 1.537)
    assert math.floor(row["f1"] * 1000) / 1000 == 0.698
    assert row["far"] == 100.0
    assert row["mar"] == 0.0
    assert row["precision"] == pytest.approx(0.537)
    assert row["recall"] == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "roc", "ap"),
    [
        # perfect ranking
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0, 1.0),
        # reversed ranking: the single positive ranks last, AP = its precision at recall 1
        ([1, 0, 0], [0.0, 1.0, 2.0], 0.0, 1.0 / 3),
        # sklearn's documented example: one inversion out of four pairs; AP = 1/2 * 1 + 1/2 * 2/3
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, 5.0 / 6),
        # all scores tied: chance AUROC, AP = positive share
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5, 0.5),
        # positives tied with one negative: each tied pair counts 1/2, so AUROC = (1 + 1/2) * 2 / 4;
        # ties form one threshold, so AP = 2/3 at recall 1 (no credit for an arbitrary tie order)
        ([0, 1, 1, 0], [0.2, 0.5, 0.5, 0.5], 0.75, 2.0 / 3),
        # the top positive tied with a negative: AUROC = (1/2 + 1 + 0 + 1) / 4, AP = 1/2 * 1/2 + 1/2 * 2/3
        ([1, 0, 1, 0], [0.9, 0.9, 0.5, 0.1], 0.625, 7.0 / 12),
        # no positives: both undefined
        ([0, 0, 0], [0.1, 0.2, 0.3], nan, nan),
        # no negatives: AUROC undefined, AP trivially 1
        ([1, 1], [0.1, 0.2], nan, 1.0),
    ],
)
def test_auroc_and_auprc(labels: list[int], scores: list[float], roc: float, ap: float) -> None:
    np.testing.assert_allclose([auroc(labels, scores), auprc(labels, scores)], [roc, ap], equal_nan=True)


@pytest.mark.parametrize(
    ("values", "ranks"),
    [
        ([], []),  # nothing to rank
        ([5.0], [1.0]),  # one value
        ([3.0, 1.0, 2.0], [3.0, 1.0, 2.0]),  # distinct values, in any order
        ([10.0, 30.0, 20.0, 20.0], [1.0, 4.0, 2.5, 2.5]),  # a pair tied in the middle
        ([7.0, 7.0, 7.0], [2.0, 2.0, 2.0]),  # all tied: every rank is the middle one
        ([1.0, 1.0, 2.0, 2.0, 2.0], [1.5, 1.5, 4.0, 4.0, 4.0]),  # two groups of ties
        ([-np.inf, 0.0, np.inf], [1.0, 2.0, 3.0]),  # infinities rank at the ends
    ],
)
def test_average_ranks(values: list[float], ranks: list[float]) -> None:
    got = average_ranks(np.array(values))
    assert got.tolist() == ranks
    assert got.sum() == len(values) * (len(values) + 1) / 2  # ties keep the sum of ranks 1..n


def test_precision_recall_curve_follows_sklearn_layout() -> None:
    curve = precision_recall_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(curve.precision, [0.5, 2 / 3, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(curve.recall, [1.0, 1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(curve.thresholds, [0.1, 0.35, 0.4, 0.8])


def test_precision_recall_curve_collapses_ties() -> None:
    curve = precision_recall_curve([0, 1, 1, 0], [0.2, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(curve.thresholds, [0.2, 0.5])
    np.testing.assert_allclose(curve.precision, [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(curve.recall, [1.0, 1.0, 0.0])


def test_metrics_ignore_input_order() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = rng.integers(0, 20, 500) + labels * 3.0  # many ties
    perm = rng.permutation(500)
    assert auroc(labels, scores) == pytest.approx(auroc(labels[perm], scores[perm]), abs=1e-15)
    assert auprc(labels, scores) == pytest.approx(auprc(labels[perm], scores[perm]), abs=1e-15)


def test_summarize_with_scores() -> None:
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    row = summarize(confusion(labels, [0, 1, 0, 1]), labels, scores)
    assert set(row) == {"f1", "far", "mar", "precision", "recall", "auroc", "auprc"}
    assert row["f1"] == 0.5
    assert row["auroc"] == 0.75
    assert row["auprc"] == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # lengths differ
        (lambda: confusion([0, 1], [0, 1, 1]), "same length"),
        # labels that are not 0/1
        (lambda: confusion([0, 2], [0, 1]), "only 0 and 1"),
        # probabilities passed where hard predictions are expected
        (lambda: confusion([0, 1], [0.2, 0.9]), "only 0 and 1"),
        # 2-D input
        (lambda: confusion([[0, 1]], [[0, 1]]), "1-D"),
        # scores of the wrong length
        (lambda: auroc([0, 1], [0.1]), "same shape"),
        # NaN scores cannot be ranked
        (lambda: auprc([0, 1], [0.1, nan]), "NaN"),
        # a PR curve needs positives
        (lambda: precision_recall_curve([0, 0], [0.1, 0.2]), "positive"),
        # labels without scores
        (lambda: summarize(Confusion(), labels=[0, 1]), "both labels and scores"),
    ],
)
def test_invalid_input_is_rejected(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
