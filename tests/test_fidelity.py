"""The fidelity figures of synthetic windows on arrays whose answer is known (two draws of Sines, uniform noise,
shifted and copied windows), and `edgevae generator-report` end to end on an .npz.

Each figure is shown to fail as well as to pass: a score that calls noise faithful, or copies novel, is a
defect. The post-hoc models train for a few hundred steps here, not the papers' thousands.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgevae.agent.table import Table, write_table
from edgevae.cli.main import main
from edgevae.core.errors import DataError
from edgevae.evaluation import fidelity
from edgevae.evaluation.generator_data import (
    RealWindows,
    SyntheticWindows,
    align_channels,
    read_synthetic,
    sines_windows,
    table_windows,
)
from edgevae.evaluation.generator_report import ReportSettings, generator_report
from edgevae.training.sines import sines

N = 2000
CHANNELS = tuple(f"s{i}" for i in range(5))
FAST = ReportSettings(runs=1, steps=20, predictive_steps=20)
PLOTS = {"windows.png", "marginals.png", "autocorrelation.png", "pca.png"}


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    return sines(N, seed=1)


@pytest.fixture(scope="module")
def other_real() -> np.ndarray:
    return sines(N, seed=2)  # a disjoint draw of the same distribution


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(N, 24, 5)).astype(np.float32)


# The post-hoc GRU scores


@pytest.mark.slow
def test_discriminative_score_tells_noise_from_sines_but_not_two_draws_of_sines(
    real: np.ndarray, other_real: np.ndarray, noise: np.ndarray
) -> None:
    same = fidelity.discriminative_score(real, other_real, runs=2, steps=500)
    different = fidelity.discriminative_score(real, noise, runs=2, steps=500)
    assert same.mean < 0.05, same
    assert different.mean > 0.4, different
    assert len(same.values) == 2
    assert same.std == pytest.approx(np.std(same.values))


def test_discriminative_score_is_deterministic_for_a_seed(real: np.ndarray, noise: np.ndarray) -> None:
    first = fidelity.discriminative_score(real, noise, runs=2, steps=15, seed=3)
    assert fidelity.discriminative_score(real, noise, runs=2, steps=15, seed=3) == first
    assert fidelity.discriminative_score(real, noise, runs=2, steps=15, seed=4).values != first.values


@pytest.mark.slow
def test_predictive_score_trained_on_noise_forecasts_real_windows_worse(
    real: np.ndarray, other_real: np.ndarray, noise: np.ndarray
) -> None:
    on_noise = fidelity.predictive_score(real, noise, runs=1, steps=300)
    on_sines = fidelity.predictive_score(real, other_real, runs=1, steps=300)
    assert on_noise.synthetic.mean > on_noise.real.mean + 0.05, on_noise
    # Trained on another draw of Sines, the forecaster is as good as one trained on the real windows.
    assert on_sines.synthetic.mean == pytest.approx(on_sines.real.mean, abs=0.02), on_sines
    # In the forecast channel's own units: Sines values lie in [0.5, 1], so half the scaled error.
    assert on_sines.target_span == pytest.approx(np.ptp(real[..., -1]))
    assert on_sines.raw[0].mean == pytest.approx(on_sines.synthetic.mean * on_sines.target_span)


def test_forecast_pairs_read_the_other_channels_and_forecast_the_last_one() -> None:
    windows = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    x, y = fidelity.forecast_pairs(windows)
    assert x.shape == (2, 3, 2)
    assert y.shape == (2, 3, 1)
    assert np.array_equal(x, windows[:, :-1, :2])
    assert np.array_equal(y[..., 0], windows[:, 1:, 2])
    # One channel: its own past forecasts it.
    x1, y1 = fidelity.forecast_pairs(windows[..., :1])
    assert np.array_equal(x1[..., 0], windows[:, :-1, 0])
    assert np.array_equal(y1[..., 0], windows[:, 1:, 0])


# The statistics


def test_mmd_of_two_draws_is_below_that_of_shifted_windows(real: np.ndarray, other_real: np.ndarray) -> None:
    same = fidelity.mmd_rbf(real, other_real, max_windows=500)
    shifted = fidelity.mmd_rbf(real, other_real + 0.1, max_windows=500)
    assert abs(same) < 0.01 < shifted


def test_marginal_autocorrelation_and_correlation_differences_separate_noise_from_sines(
    real: np.ndarray, other_real: np.ndarray, noise: np.ndarray
) -> None:
    assert (
        fidelity.marginal_distance(real, other_real).max() < 0.05 < 0.3 < fidelity.marginal_distance(real, noise).min()
    )
    # Sines are smooth (autocorrelation near 1 at lag 1); white noise has none.
    assert fidelity.acf_difference(real, other_real).mean() < 0.05 < 0.5 < fidelity.acf_difference(real, noise).mean()
    assert fidelity.acf_difference(real, noise, lags=3).shape == (5, 3)
    # Scaled channel by channel: values in other units give the same marginal figure.
    assert fidelity.marginal_distance(real * 100 + 7, noise * 100 + 7) == pytest.approx(
        fidelity.marginal_distance(real, noise)
    )
    mixed = real.copy()
    mixed[..., 1] = 1.0 - mixed[..., 0]  # channel 1 perfectly anticorrelated with channel 0
    assert fidelity.correlation_difference(real, mixed) > 0.1 > fidelity.correlation_difference(real, other_real)
    assert fidelity.correlation_difference(real[..., :1], other_real[..., :1]) is None


def test_memorization_flags_copies_of_training_windows_and_not_a_fresh_draw(
    real: np.ndarray, other_real: np.ndarray
) -> None:
    holdout = sines(500, seed=3)
    fresh = fidelity.memorization(real, holdout, other_real[:500])
    assert not fresh.flagged
    assert fresh.exact_copies == 0.0
    assert 0.8 < fresh.ratio < 1.25
    assert fresh.fraction_closer < 0.05
    copies = fidelity.memorization(real, holdout, real[:500])
    assert copies.flagged
    assert copies.exact_copies == 1.0
    assert copies.ratio == 0.0
    # A copy with a little noise on it is no exact copy, and still flagged.
    near = real[:500] + np.random.default_rng(1).normal(0, 1e-3, size=real[:500].shape)
    nearly = fidelity.memorization(real, holdout, near)
    assert nearly.flagged
    assert nearly.exact_copies == 0.0
    assert nearly.ratio < 0.1


def _stride_1_windows(series: np.ndarray, window: int = 24) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(series, window, axis=0).transpose(0, 2, 1).copy()


def _plant(rows: int, seed: int, level: float = 0.0) -> np.ndarray:
    """A slow two-channel process with noise, as a sensor logs it."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    base = np.stack([np.sin(t / 15.0 + seed), np.cos(t / 23.0 + seed)], axis=1)
    return (base + 0.05 * rng.standard_normal(base.shape) + level).astype(np.float32)


def test_memorization_does_not_take_a_drifting_plant_for_copies() -> None:
    """Before, the reference was the held-out windows: on data whose later rows drifted, every fresh window
    of the training period was closer than they were, and the check said copies."""
    train = _stride_1_windows(_plant(3000, seed=0))
    drifted = _stride_1_windows(_plant(600, seed=1, level=0.5))  # later rows, another operating point
    fresh = _stride_1_windows(_plant(1200, seed=2))  # the training period's process, never seen
    mem = fidelity.memorization(train, drifted, fresh)
    assert mem.holdout_median > 3 * mem.reference_median, "the held-out windows lie far away"
    assert not mem.flagged
    assert 0.8 < mem.ratio < 1.5
    copies = fidelity.memorization(train, drifted, train[::3])
    assert copies.flagged
    assert copies.ratio == 0.0


def test_the_reference_leaves_out_the_overlapping_windows() -> None:
    windows = _stride_1_windows(_plant(400, seed=0))
    queries = np.array([0, 100, 376])
    d = fidelity.distances_to_other_windows(windows, queries)
    # A neighbour shifted by one row is nearly the same window; it must not be the reference.
    assert d[1] > np.sqrt(((windows[101] - windows[100]) ** 2).sum())
    for k, i in enumerate(queries):
        overlapping = np.arange(i - 23, i + 24)
        others = np.setdiff1d(np.arange(len(windows)), overlapping)
        expected = np.sqrt(((windows[others] - windows[i]) ** 2).sum(axis=(1, 2))).min()
        assert d[k] == pytest.approx(expected, rel=1e-4)


def test_windows_of_other_shapes_are_refused(real: np.ndarray) -> None:
    with pytest.raises(DataError, match="window, channels"):
        fidelity.mmd_rbf(real, real[:, :12])
    with pytest.raises(DataError, match="expected"):
        fidelity.discriminative_score(real, real[0], steps=1)


# Real and synthetic windows in, a report out


def _npz(path: Path, windows: np.ndarray, channels: tuple[str, ...] = CHANNELS) -> Path:
    np.savez(path, windows=windows.astype(np.float32), channels=np.array(channels))
    return path


def test_synthetic_windows_are_read_aligned_and_refused_when_they_do_not_fit(tmp_path: Path) -> None:
    windows = sines(300, seed=5)
    synthetic = read_synthetic(_npz(tmp_path / "a.npz", windows), n=100)
    assert synthetic.windows.shape == (100, 24, 5)
    assert synthetic.kind == "file"
    real = sines_windows(24, CHANNELS, n=200)
    reordered = SyntheticWindows(windows[..., ::-1], CHANNELS[::-1], "x", "file")
    assert np.array_equal(align_channels(reordered, real).windows, windows)
    with pytest.raises(DataError, match="not the real data's"):
        align_channels(SyntheticWindows(windows, ("a", "b", "c", "d", "e"), "x", "file"), real)
    with pytest.raises(DataError, match="steps long"):
        align_channels(SyntheticWindows(windows[:, :12], CHANNELS, "x", "file"), real)
    # `edgevae augment` names the generator that wrote the file.
    provenance = np.array(json.dumps({"path": "runs/gen", "kind": "diffusion", "sample_seed": 4}))
    np.savez(tmp_path / "c.npz", windows=windows, channels=np.array(CHANNELS), generator=provenance)
    named = read_synthetic(tmp_path / "c.npz")
    assert named.kind == "diffusion"
    assert "runs/gen" in named.source
    np.savez(tmp_path / "b.npz", samples=windows, channels=np.array(CHANNELS))
    with pytest.raises(DataError, match="no windows array") as info:
        read_synthetic(tmp_path / "b.npz")
    assert "edgevae augment" in info.value.describe()


def test_real_windows_of_a_table_are_normal_rows_of_its_splits(tmp_path: Path) -> None:
    rows = 12_000
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, 2))
    labels = np.zeros(rows, dtype=np.int8)
    labels[1000:1100] = 1
    values[labels == 1] = 1000.0  # an anomaly no real window may contain
    write_table(Table("t", np.arange(rows, dtype=np.float64), values, ("a", "b"), labels), tmp_path / "t.csv")
    real = table_windows(tmp_path / "t.csv", window=16)
    assert real.channels == ("a", "b")
    assert real.train.shape[1:] == (16, 2)
    assert real.train.max() < 1000
    assert real.holdout.max() < 1000
    # 70/15/15 chronological splits, stride 1: the train split's 8,400 rows less the 100 anomalous ones.
    assert len(real.train) == (1000 - 15) + (8400 - 1100 - 15)
    assert len(real.holdout) == 1800 - 15


def test_report_on_an_npz_writes_the_table_results_and_plots(tmp_path: Path) -> None:
    real = sines_windows(24, CHANNELS, n=1000)
    # Half faithful windows, half noise: every figure is away from both ends.
    mixed = np.concatenate([sines(300, seed=7), np.random.default_rng(1).uniform(size=(300, 24, 5))])
    paths = generator_report(_npz(tmp_path / "aug.npz", mixed), real, tmp_path / "report", FAST)
    assert {p.name for p in paths.values()} == {"report.md", "results.json", *PLOTS}
    assert all(p.stat().st_size > 0 for p in paths.values())
    results = json.loads(paths["json"].read_text())
    figures = results["figures"]
    assert results["synthetic"]["windows"] == 600
    assert results["real"]["compared_windows"] == 600
    assert 0.0 <= figures["discriminative"]["mean"] <= 0.5
    assert figures["mmd2"] > results["reference"]["mmd2"]
    assert figures["marginal_tv"]["mean"] > results["reference"]["marginal_tv"]["mean"]
    assert set(figures["marginal_tv"]["per_channel"]) == set(CHANNELS)
    predictive = figures["predictive"]
    assert predictive["target"] == CHANNELS[-1]
    assert predictive["synthetic_raw"]["mean"] == pytest.approx(
        predictive["synthetic"]["mean"] * predictive["target_span"]
    )
    assert not figures["memorization"]["flagged"]
    text = paths["markdown"].read_text()
    for needle in ("discriminative score", "predictive score", "MMD²", "Memorization", "0.006 ± 0.007", "pca.png"):
        assert needle in text


def test_cli_reports_on_an_npz_against_sines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copies = sines(400, seed=0)  # the very windows `--sines` draws as training windows: copies
    npz = _npz(tmp_path / "copies.npz", copies)
    out = tmp_path / "report"
    fast = ["--runs", "1", "--steps", "20", "--predictive-steps", "20"]
    assert main(["generator-report", "--synthetic", str(npz), "--sines", "--out", str(out), *fast]) == 0
    assert "FLAGGED" in capsys.readouterr().out
    assert PLOTS | {"report.md", "results.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "results.json").read_text())["figures"]["memorization"]["flagged"]


def test_cli_refuses_two_sources_of_real_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = _npz(tmp_path / "a.npz", sines(10, seed=0))
    argv = ["generator-report", "--synthetic", str(npz), "--sines", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--sines and --data" in capsys.readouterr().err


def test_a_report_of_windows_in_hand_needs_no_files(tmp_path: Path) -> None:
    real = RealWindows(sines(200, seed=0), sines(100, seed=1), CHANNELS, "Sines")
    synthetic = SyntheticWindows(sines(200, seed=2), CHANNELS, "in memory", "file")
    paths = generator_report(
        synthetic, real, tmp_path, ReportSettings(runs=1, steps=5, predictive_steps=5, plots=False)
    )
    assert set(paths) == {"json", "markdown"}
