"""Alert-threshold calibration from the scores of held-out normal windows (pure numpy)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.bundle import Threshold
from agent.errors import ConfigError
from export.errors import ExportError
from export.pot import pot_threshold


def quantile_threshold(scores: np.ndarray, q: float = 0.995, margin: float = 1.0) -> float:
    """The q-quantile of normal scores, pushed away from them by `margin`.

    `margin` scales the distance from zero, `t + (margin - 1) * |t|`, so that a margin above 1 always
    raises the threshold, also for a Gaussian NLL score below zero.

    >>> quantile_threshold(np.arange(101.0), q=0.9)
    90.0
    >>> quantile_threshold(np.array([-2.0, -1.0]), q=1.0, margin=1.5)
    -0.5
    """
    if not 0.0 < q <= 1.0:
        msg = f"quantile q must be in (0, 1], got {q}"
        raise ConfigError(msg)
    if not margin > 0.0:
        msg = f"margin must be > 0, got {margin}"
        raise ConfigError(msg)
    t = float(np.quantile(scores, q))
    return t + (margin - 1.0) * abs(t)


def pot(scores: np.ndarray, risk: float = 1e-3, init_quantile: float = 0.98) -> float:
    """Peaks-over-threshold (Siffer et al., KDD 2017): the score exceeded with probability `risk` per window,
    extrapolated from a generalized Pareto fit to the tail above the `init_quantile` quantile."""
    try:
        return pot_threshold(scores, risk=risk, init_quantile=init_quantile).threshold
    except ValueError as exc:
        msg = (
            f"peaks-over-threshold calibration failed on {len(scores)} hold-out windows: {exc}; "
            "train on more normal data or use --threshold-method quantile"
        )
        raise ExportError(msg) from exc


# name -> function(scores, **params) -> threshold value. Every method sees validated, finite 1-D scores.
METHODS: dict[str, Callable[..., float]] = {
    "quantile": quantile_threshold,
    "pot": pot,
}


def calibrate(scores: np.ndarray, method: str = "quantile", **params: Any) -> Threshold:
    """Choose the alert threshold on `scores` with a method from METHODS; the result records every parameter."""
    if method not in METHODS:
        msg = f"threshold method must be one of {sorted(METHODS)}, got {method!r}"
        raise ConfigError(msg)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        msg = f"expected a non-empty 1-D array of scores, got shape {values.shape}"
        raise ExportError(msg)
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        msg = f"expected finite scores to calibrate on, got {bad} NaN or infinite of {values.size}"
        raise ExportError(msg)
    fn = METHODS[method]
    try:
        bound = inspect.signature(fn).bind(values, **params)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(fn).parameters if p != "scores"]
        msg = f"threshold method {method!r} takes parameters {accepted}, got {sorted(params)}"
        raise ConfigError(msg) from exc
    bound.apply_defaults()
    value = float(fn(*bound.args, **bound.kwargs))
    recorded = {k: v for k, v in bound.arguments.items() if k != "scores"}
    return Threshold(value=value, method=method, params=recorded, calibration_windows=int(values.size))
