"""Peaks-over-threshold alarm thresholds from normal calibration scores (Siffer et al., KDD 2017)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Fewer peaks than this make the GPD fit mostly noise; at init_quantile 0.98 it takes at
# least 500 calibration scores.
MIN_PEAKS = 10
# Grid points per root-search interval. Roots are bracketed by sign changes on this grid, then
# bisected; log spacing resolves both the neighbourhood of x = 0 and the interval ends.
_GRID = 200
_BISECTIONS = 80
# Smallest |x * Y| searched for a root (see fit_gpd).
_X_MIN = 1e-6


class PotResult(NamedTuple):
    """A fitted tail and the threshold it implies.

    `threshold` is z_q, in score units, exceeded by a normal score with probability `risk`
    under the fit. `gamma` and `sigma` parametrise the generalized Pareto distribution of the
    excesses over `t` (gamma = 0 is the exponential tail, gamma < 0 a bounded one);
    `n_peaks` is N_t, the count of calibration scores strictly above `t`.
    """

    threshold: float
    gamma: float
    sigma: float
    t: float
    n_peaks: int


def _grimshaw_w(x: float, y: FloatArray) -> float:
    """w(x) = u(x) v(x) - 1 from Grimshaw (1993); its non-zero roots x* = gamma/sigma are GPD MLE candidates."""
    xy = x * y
    u = float(np.mean(1.0 / (1.0 + xy)))
    v = 1.0 + float(np.mean(np.log1p(xy)))
    return u * v - 1.0


def _bisect(f: Callable[[float], float], lo: float, hi: float, f_lo: float) -> float:
    """Root of `f` in [lo, hi] given a sign change; plain bisection is slow but cannot leave the bracket."""
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        f_mid = f(mid)
        if f_mid == 0.0:
            return mid
        if (f_mid < 0.0) == (f_lo < 0.0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _roots_on_grid(f: Callable[[float], float], grid: FloatArray) -> list[float]:
    values = [f(float(x)) for x in grid]
    roots = []
    for i in range(len(grid) - 1):
        if values[i] == 0.0:
            roots.append(float(grid[i]))
        elif (values[i] < 0.0) != (values[i + 1] < 0.0):
            roots.append(_bisect(f, float(grid[i]), float(grid[i + 1]), values[i]))
    return roots


def _gpd_log_likelihood(y: FloatArray, gamma: float, sigma: float) -> float:
    """Log-likelihood of excesses `y` under GPD(gamma, sigma); -inf outside the support."""
    if sigma <= 0.0:
        return -math.inf
    if gamma == 0.0:
        return -y.size * math.log(sigma) - float(np.sum(y)) / sigma
    z = (gamma / sigma) * y
    if float(np.min(z)) <= -1.0:
        return -math.inf
    return -y.size * math.log(sigma) - (1.0 + 1.0 / gamma) * float(np.sum(np.log1p(z)))


def fit_gpd(excesses: npt.ArrayLike) -> tuple[float, float]:
    """Maximum-likelihood (gamma, sigma) of a GPD by Grimshaw's trick, as in SPOT (Siffer et al.).

    The MLE satisfies x* = gamma/sigma with w(x*) = 0, gamma = v(x*) - 1 and sigma = gamma/x*.
    Roots are sought in (-1/Y_max, 0) and (0, 2(mean - Y_min)/Y_min^2], the bounds from the
    paper; every root and the exponential case (gamma = 0, sigma = mean) is scored and the
    highest log-likelihood wins. `excesses` must be positive. Tails bounded as sharply as
    gamma <= -1 (e.g. uniform scores) have no interior MLE (Grimshaw, 1993), so there the
    exponential candidate wins and the threshold errs high.
    """
    y = np.sort(np.asarray(excesses, dtype=np.float64))
    if y.size == 0 or not np.all(np.isfinite(y)) or y[0] <= 0.0:
        msg = "excesses must be a non-empty array of finite, strictly positive values"
        raise ValueError(msg)
    y_min, y_max, y_mean = float(y[0]), float(y[-1]), float(np.mean(y))

    # Grids in units of the natural scale 1/Y: log-spaced towards x = 0 and, on the negative
    # side, towards the pole at x = -1/Y_max where 1 + x Y_max vanishes. w is O((x Y)^2) near 0,
    # so below |x Y| = 1e-6 its sign is rounding noise and any root there is the exponential case.
    near_zero = np.logspace(math.log10(_X_MIN), 0, _GRID, endpoint=False)
    near_pole = 1.0 - np.logspace(-10, 0, _GRID, endpoint=False)
    negative = -np.unique(np.r_[near_zero, near_pole]) / y_max
    # The paper's upper bound explodes when the smallest excess is ~0; beyond x = 1e12/mean the
    # fit would put nearly all mass at 0, which no calibration set supports.
    upper = min(max(2.0 * (y_mean - y_min) / (y_min * y_min), 10 * _X_MIN / y_mean), 1e12 / y_mean)
    positive = np.logspace(math.log10(_X_MIN / y_mean), math.log10(upper), 2 * _GRID)

    def w(x: float) -> float:
        return _grimshaw_w(x, y)

    candidates = [(0.0, y_mean)]
    for x_star in _roots_on_grid(w, np.sort(negative)) + _roots_on_grid(w, positive):
        gamma = float(np.mean(np.log1p(x_star * y)))
        if gamma != 0.0:
            candidates.append((gamma, gamma / x_star))
    return max(candidates, key=lambda gs: _gpd_log_likelihood(y, gs[0], gs[1]))


def pot_threshold(scores: npt.ArrayLike, risk: float = 1e-3, init_quantile: float = 0.98) -> PotResult:
    """Alarm threshold z_q that a normal score exceeds with probability `risk` (Siffer et al., KDD 2017).

    `scores` are normal calibration scores (higher = more anomalous); n is their count. `t` is
    their `init_quantile` quantile and the N_t scores strictly above it are the peaks. With a
    GPD(gamma, sigma) fitted to the excesses,

        z_q = t + sigma/gamma * ((q n / N_t)^(-gamma) - 1),   z_q = t - sigma * log(q n / N_t) if gamma = 0,

    evaluated as sigma/gamma * expm1(-gamma * log(q n / N_t)) so that small gamma keeps its
    precision. Requires risk < N_t/n (a threshold inside the fitted tail, above `t`). Raises
    ValueError for non-finite scores, constant scores, or fewer than MIN_PEAKS peaks.
    """
    if not 0.0 < risk < 1.0:
        raise ValueError(f"risk must lie in (0, 1), got {risk}")
    if not 0.0 < init_quantile < 1.0:
        raise ValueError(f"init_quantile must lie in (0, 1), got {init_quantile}")
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        msg = "scores must all be finite"
        raise ValueError(msg)
    if x.size == 0 or float(np.min(x)) == float(np.max(x)):
        msg = "scores are empty or all equal; a tail cannot be fitted"
        raise ValueError(msg)

    t = float(np.quantile(x, init_quantile))
    peaks = x[x > t] - t
    n_peaks = int(peaks.size)
    if n_peaks < MIN_PEAKS:
        raise ValueError(
            f"only {n_peaks} scores exceed the {init_quantile:g} quantile {t:g}; POT needs at least "
            f"{MIN_PEAKS}: pass more calibration scores or a lower init_quantile"
        )
    log_ratio = math.log(risk * x.size / n_peaks)
    if log_ratio >= 0.0:
        raise ValueError(
            f"risk {risk:g} must be below the peak fraction N_t/n = {n_peaks / x.size:g}; lower init_quantile or risk"
        )

    gamma, sigma = fit_gpd(peaks)
    excess = -sigma * log_ratio if gamma == 0.0 else sigma / gamma * math.expm1(-gamma * log_ratio)
    return PotResult(threshold=t + excess, gamma=gamma, sigma=sigma, t=t, n_peaks=n_peaks)
