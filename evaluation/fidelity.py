"""How faithful synthetic sensor windows are to real ones, measured as the time-series generation literature
does (TimeGAN, TimeVAE, Diffusion-TS); arrays in, figures out. docs/generators.md says what each figure means.

- `discriminative_score`, `predictive_score`: TimeGAN's post-hoc GRU figures (torch; `fidelity_posthoc`)
- `mmd_rbf`, `marginal_distance`, `acf_difference`, `correlation_difference`, `memorization`: statistics
  without training (numpy; `fidelity_stats`)
"""

from __future__ import annotations

from edgevae.evaluation.fidelity_posthoc import (
    BATCH,
    DISCRIMINATIVE_STEPS,
    PREDICTIVE_STEPS,
    RUNS,
    Predictive,
    Spread,
    discriminative_score,
    forecast_pairs,
    predictive_score,
)
from edgevae.evaluation.fidelity_stats import (
    ACF_LAGS,
    MARGINAL_BINS,
    MEMORIZATION_FLAG,
    MMD_MAX_WINDOWS,
    Memorization,
    acf_difference,
    autocorrelation,
    correlation_difference,
    distances_to_other_windows,
    marginal_distance,
    memorization,
    mmd_rbf,
    scale_like,
)

__all__ = [
    "ACF_LAGS",
    "BATCH",
    "DISCRIMINATIVE_STEPS",
    "MARGINAL_BINS",
    "MEMORIZATION_FLAG",
    "MMD_MAX_WINDOWS",
    "PREDICTIVE_STEPS",
    "RUNS",
    "Memorization",
    "Predictive",
    "Spread",
    "acf_difference",
    "autocorrelation",
    "correlation_difference",
    "discriminative_score",
    "distances_to_other_windows",
    "forecast_pairs",
    "marginal_distance",
    "memorization",
    "mmd_rbf",
    "predictive_score",
    "scale_like",
]
