"""Peaks-over-threshold recovers known tail quantiles and refuses inputs it cannot fit."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from edgevae.core.pot import MIN_PEAKS, fit_gpd, pot_threshold

SEEDS = range(5)


def gpd_sample(seed: int, n: int, gamma: float, sigma: float = 1.0) -> npt.NDArray[np.float64]:
    """Inverse-CDF draws from GPD(gamma, sigma); gamma = 0 is Exp(1/sigma)."""
    log_u = np.log(np.random.default_rng(seed).random(n))
    return -sigma * log_u if gamma == 0.0 else sigma * np.expm1(-gamma * log_u) / gamma


def gpd_quantile(p_exceed: float, gamma: float, sigma: float = 1.0) -> float:
    log_p = math.log(p_exceed)
    return -sigma * log_p if gamma == 0.0 else sigma * math.expm1(-gamma * log_p) / gamma


def log_likelihood(y: npt.NDArray[np.float64], gamma: float, sigma: float) -> float:
    # Written from the density, independently of the module's log1p form.
    if gamma == 0.0:
        return float(np.sum(-np.log(sigma) - y / sigma))
    return float(np.sum(-np.log(sigma) - (1 / gamma + 1) * np.log(1 + gamma * y / sigma)))


@pytest.mark.parametrize(
    ("gamma", "rel_tol", "gamma_tol"),
    [
        # exponential tail (gamma = 0): true 0.999 quantile is ln(1000) = 6.91
        (0.0, 0.10, 0.15),
        # heavy tail, gamma = 0.2: true 0.999 quantile is (1000^0.2 - 1) / 0.2 = 14.9
        (0.2, 0.15, 0.15),
        # bounded tail, gamma = -0.2: true 0.999 quantile is 3.74
        (-0.2, 0.10, 0.15),
    ],
)
@pytest.mark.parametrize("seed", SEEDS)
def test_recovers_the_0999_quantile(seed: int, gamma: float, rel_tol: float, gamma_tol: float) -> None:
    scores = gpd_sample(seed, 20_000, gamma)
    result = pot_threshold(scores, risk=1e-3, init_quantile=0.98)
    assert result.threshold == pytest.approx(gpd_quantile(1e-3, gamma), rel=rel_tol)
    assert result.gamma == pytest.approx(gamma, abs=gamma_tol)
    assert result.n_peaks == 400
    assert result.threshold > result.t


def test_fit_is_a_likelihood_maximum() -> None:
    y = gpd_sample(7, 2_000, 0.3, sigma=2.0)
    gamma, sigma = fit_gpd(y)
    best = log_likelihood(y, gamma, sigma)
    # The true parameters and small moves in every direction must not beat the fitted ones.
    assert best >= log_likelihood(y, 0.3, 2.0)
    for dg, ds in [(0.01, 0), (-0.01, 0), (0, 0.02), (0, -0.02), (0.01, 0.02), (-0.01, -0.02)]:
        assert best >= log_likelihood(y, gamma + dg, sigma * (1 + ds))


def test_equal_excesses_fall_back_to_the_exponential() -> None:
    # No non-zero root exists (log s <= s - 1), so only the gamma = 0 candidate remains.
    assert fit_gpd(np.full(50, 2.5)) == (0.0, 2.5)


def test_threshold_is_equivariant_to_affine_rescaling() -> None:
    scores = gpd_sample(3, 5_000, 0.1)
    base = pot_threshold(scores)
    moved = pot_threshold(3.0 * scores + 10.0)
    assert moved.threshold == pytest.approx(3.0 * base.threshold + 10.0, rel=1e-6)
    assert moved.gamma == pytest.approx(base.gamma, abs=1e-6)


def test_lower_risk_gives_a_higher_threshold() -> None:
    scores = gpd_sample(4, 20_000, 0.0)
    thresholds = [pot_threshold(scores, risk=q).threshold for q in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert thresholds == sorted(thresholds)


def test_deterministic_and_order_free() -> None:
    scores = gpd_sample(5, 20_000, 0.2)
    first = pot_threshold(scores, risk=1e-4)
    assert pot_threshold(scores, risk=1e-4) == first
    assert pot_threshold(np.random.default_rng(0).permutation(scores), risk=1e-4) == first


@pytest.mark.parametrize(
    ("scores", "kwargs", "message"),
    [
        # constant scores have no tail
        (np.full(1_000, 0.3), {}, "all equal"),
        # no scores at all
        (np.array([]), {}, "empty"),
        # 100 scores above the 0.98 quantile give 2 peaks
        (np.linspace(0, 1, 100), {}, f"at least {MIN_PEAKS}"),
        # a risk at or above the peak fraction (2%) would put the threshold below t
        (np.linspace(0, 1, 10_000), {"risk": 0.05}, "peak fraction"),
        # NaN and inf scores cannot be ranked
        (np.r_[np.linspace(0, 1, 1_000), np.nan], {}, "finite"),
        (np.r_[np.linspace(0, 1, 1_000), np.inf], {}, "finite"),
        # 2-D input
        (np.zeros((10, 10)), {}, "1-D"),
        # risk and init_quantile must be probabilities
        (np.linspace(0, 1, 1_000), {"risk": 0.0}, "risk"),
        (np.linspace(0, 1, 1_000), {"init_quantile": 1.0}, "init_quantile"),
    ],
)
def test_degenerate_input_is_rejected(scores: npt.NDArray[np.float64], kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pot_threshold(scores, **kwargs)


def test_fit_gpd_rejects_non_positive_excesses() -> None:
    with pytest.raises(ValueError, match="strictly positive"):
        fit_gpd(np.array([0.0, 1.0, 2.0]))
