"""Threshold calibration: the quantile rule, the method registry and the errors it raises."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import edgevae.core.thresholds
from edgevae.core.decision import Threshold
from edgevae.core.errors import ConfigError, ExportError
from edgevae.core.thresholds import (
    METHODS,
    calibrate,
    needs_training_scores,
    quantile_threshold,
    scaled_quantile_threshold,
)

UNIFORM = np.linspace(0.0, 1.0, 1001)


@pytest.mark.parametrize(
    ("scores", "q", "margin", "expected"),
    [
        # the default quantile of evenly spread scores
        (UNIFORM, 0.995, 1.0, 0.995),
        # q = 1 is the largest normal score
        (UNIFORM, 1.0, 1.0, 1.0),
        # a margin scales the threshold up
        (UNIFORM, 0.5, 1.2, 0.6),
        # all scores equal: the threshold is that score
        (np.full(50, 0.25), 0.995, 1.0, 0.25),
        # a single calibration score
        (np.array([3.0]), 0.9, 1.0, 3.0),
        # negative scores (Gaussian NLL): a margin above 1 still raises the threshold
        (np.array([-4.0, -3.0, -2.0]), 1.0, 1.5, -1.0),
        # a margin below 1 lowers it, for positive and negative scores alike
        (np.array([2.0]), 1.0, 0.5, 1.0),
        (np.array([-2.0]), 1.0, 0.5, -3.0),
        # interpolation between two scores
        (np.array([0.0, 10.0]), 0.25, 1.0, 2.5),
        # a zero threshold stays zero whatever the margin
        (np.zeros(5), 0.9, 3.0, 0.0),
    ],
)
def test_quantile_threshold(scores: np.ndarray, q: float, margin: float, expected: float) -> None:
    assert quantile_threshold(scores, q=q, margin=margin) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("q", "margin"),
    [
        (0.0, 1.0),  # q must be above 0
        (1.5, 1.0),  # and at most 1
        (-0.1, 1.0),
        (0.99, 0.0),  # margin must be positive
        (0.99, -1.0),
    ],
)
def test_quantile_threshold_rejects_bad_parameters(q: float, margin: float) -> None:
    with pytest.raises(ConfigError):
        quantile_threshold(UNIFORM, q=q, margin=margin)


# Exponential(1) scores at evenly spaced quantiles: the score exceeded with probability r is -log(r) exactly,
# and their tail above any level is exponential again, so peaks-over-threshold fits it with shape 0.
EXPONENTIAL = -np.log1p(-(np.arange(10_000) + 0.5) / 10_000)
# method -> (hold-out scores, training scores or None, parameters, the threshold they must give, its relative
# tolerance). Every registered method needs a row: a new method fails below until it has a case of known value.
KNOWN: dict[str, tuple[np.ndarray, np.ndarray | None, dict[str, float], float, float]] = {
    # the 0.9 quantile of 0, 0.001, ..., 1, raised by a margin of 1.5
    "quantile": (UNIFORM, None, {"q": 0.9, "margin": 1.5}, 1.35, 1e-9),
    # the training scores' 0.99 quantile (0.99), scaled by the hold-out's 0.95 quantile ratio (2), margin 1
    "scaled-quantile": (
        2 * np.linspace(0.0, 1.0, 101),
        np.linspace(0.0, 1.0, 101),
        {"q": 0.99, "ratio_q": 0.95, "margin": 1.0},
        1.98,
        1e-9,
    ),
    # risk 1e-3 of an exponential tail: -log(1e-3) = 6.908, extrapolated from the 200 peaks above the 0.98 quantile
    "pot": (EXPONENTIAL, None, {"risk": 1e-3, "init_quantile": 0.98}, float(np.log(1e3)), 0.01),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_gives_a_known_threshold(method: str) -> None:
    assert method in KNOWN, f"threshold method {method!r} has no case of known value in KNOWN"
    scores, training, params, expected, rel = KNOWN[method]
    threshold = calibrate(scores, method, training, **params)
    assert threshold.value == pytest.approx(expected, rel=rel)
    assert (threshold.method, threshold.params, threshold.calibration_windows) == (method, params, len(scores))
    # scaling every score scales the threshold: each rule reads levels off the scores, in their units
    doubled = calibrate(2 * scores, method, None if training is None else 2 * training, **params)
    assert doubled.value == pytest.approx(2 * threshold.value, rel=1e-4)


def test_calibrate_records_method_parameters_and_window_count() -> None:
    threshold = calibrate(UNIFORM, "quantile", q=0.9)
    assert isinstance(threshold, Threshold)
    assert threshold.value == pytest.approx(0.9)
    assert (threshold.method, threshold.params, threshold.calibration_windows) == (
        "quantile",
        {"q": 0.9, "margin": 1.0},
        1001,
    )


def test_calibrate_defaults_to_the_quantile_method_and_its_defaults() -> None:
    threshold = calibrate(UNIFORM)
    assert (threshold.method, threshold.params) == ("quantile", {"q": 0.995, "margin": 1.0})


def test_calibrate_accepts_lists_and_float32() -> None:
    assert calibrate([1.0, 2.0, 3.0], q=1.0).value == 3.0  # type: ignore[arg-type]
    assert calibrate(np.array([1.0, 2.0], dtype=np.float32), q=1.0).value == 2.0


@pytest.mark.parametrize(
    ("scores", "method", "params", "error"),
    [
        (UNIFORM, "pot-typo", {}, ConfigError),  # unknown method names the known ones
        (UNIFORM, "quantile", {"risk": 0.01}, ConfigError),  # a parameter the method does not take
        (UNIFORM, "quantile", {"q": 2.0}, ConfigError),  # a parameter out of range
        (np.array([]), "quantile", {}, ExportError),  # nothing to calibrate on
        (np.ones((3, 2)), "quantile", {}, ExportError),  # not one score per window
        (np.array([0.1, np.nan, 0.3]), "quantile", {}, ExportError),  # a NaN score
        (np.array([0.1, np.inf]), "quantile", {}, ExportError),  # an infinite score
    ],
)
def test_calibrate_errors(scores: np.ndarray, method: str, params: dict[str, float], error: type[Exception]) -> None:
    with pytest.raises(error):
        calibrate(scores, method, **params)


TRAINING = np.linspace(0.0, 1.0, 101)  # quantiles read off directly: q -> q


@pytest.mark.parametrize(
    ("holdout", "q", "ratio_q", "margin", "expected"),
    [
        # hold-out scores like the training ones: the training quantile itself
        (TRAINING, 0.99, 0.95, 1.0, 0.99),
        # hold-out twice as high: the training quantile doubled
        (2 * TRAINING, 0.99, 0.95, 1.0, 1.98),
        # hold-out lower than training: never scaled below the training quantile
        (0.5 * TRAINING, 0.99, 0.95, 1.0, 0.99),
        # the ratio is read at ratio_q: a hold-out whose excess is only in its top 10 % is not scaled at 0.5
        (np.where(TRAINING > 0.9, 3 * TRAINING, TRAINING), 0.99, 0.5, 1.0, 0.99),
        # and is at 0.95: 3 x 0.95 / 0.95
        (np.where(TRAINING > 0.9, 3 * TRAINING, TRAINING), 0.99, 0.95, 1.0, 2.97),
        # margin multiplies the scaled quantile
        (1.5 * TRAINING, 0.5, 0.95, 2.0, 1.5),
        # a short hold-out: three windows
        (np.array([0.2, 0.4, 1.9]), 1.0, 1.0, 1.0, 1.9),
    ],
)
def test_scaled_quantile_threshold(
    holdout: np.ndarray, q: float, ratio_q: float, margin: float, expected: float
) -> None:
    assert scaled_quantile_threshold(holdout, TRAINING, q=q, ratio_q=ratio_q, margin=margin) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("holdout", "training", "params", "error", "match"),
    [
        (TRAINING, TRAINING, {"ratio_q": 0.0}, ConfigError, "ratio_q"),
        (TRAINING, TRAINING, {"q": 1.5}, ConfigError, "q must be"),
        (TRAINING, TRAINING, {"margin": 0.0}, ConfigError, "margin"),
        # negative scores (Gaussian NLL) have no meaningful ratio
        (TRAINING - 0.5, TRAINING, {}, ExportError, "non-negative"),
        # all-zero training scores below ratio_q: no ratio to form
        (TRAINING, np.zeros(10), {}, ExportError, "quantile score is 0"),
    ],
)
def test_scaled_quantile_errors(
    holdout: np.ndarray, training: np.ndarray, params: dict[str, float], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        calibrate(holdout, "scaled-quantile", training, **params)


def test_calibrate_passes_training_scores_only_to_the_methods_that_take_them() -> None:
    assert needs_training_scores("scaled-quantile")
    assert not needs_training_scores("quantile")
    assert not needs_training_scores("pot")
    threshold = calibrate(2 * TRAINING, "scaled-quantile", TRAINING, q=0.5, margin=1.0)
    # the hold-out's window count is recorded; the score arrays are not parameters
    assert threshold.value == pytest.approx(1.0)
    assert (threshold.params, threshold.calibration_windows) == ({"q": 0.5, "ratio_q": 0.95, "margin": 1.0}, 101)
    # a method that needs them fails clearly without them
    with pytest.raises(ExportError, match="training windows' scores"):
        calibrate(TRAINING, "scaled-quantile")
    # NaN training scores are refused like NaN hold-out scores
    with pytest.raises(ExportError, match="finite training scores"):
        calibrate(TRAINING, "scaled-quantile", np.array([0.1, np.nan]))
    # a method that does not take them ignores them
    assert calibrate(TRAINING, "quantile", TRAINING, q=1.0).value == 1.0


def test_unknown_method_error_lists_the_registry() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        calibrate(UNIFORM, "nope")


def test_docstring_examples() -> None:
    result = doctest.testmod(edgevae.core.thresholds)
    assert result.attempted > 0
    assert result.failed == 0
