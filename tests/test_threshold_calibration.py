"""Threshold calibration: the quantile rule, the method registry and the errors it raises."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import export.threshold
from agent.bundle import Threshold
from agent.errors import ConfigError
from export.errors import ExportError
from export.threshold import METHODS, calibrate, quantile_threshold

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


def test_registry_lists_the_quantile_method() -> None:
    assert METHODS["quantile"] is quantile_threshold


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


def test_unknown_method_error_lists_the_registry() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        calibrate(UNIFORM, "nope")


def test_docstring_examples() -> None:
    result = doctest.testmod(export.threshold)
    assert result.attempted > 0
    assert result.failed == 0
