"""Drift against the training distribution: the pure statistics, the manifest entry, what export writes,
and the warnings of `edgevae score`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_fixtures import CHANNELS, STD, STRIDE, WINDOW, make_bundle, noisy, reference_scores, stream, timestamps

from edgevae.agent.bundle import load_bundle
from edgevae.agent.distribution import FROM_ROWS, DriftReference
from edgevae.agent.drift import DriftMonitor, drift_warnings
from edgevae.agent.offline import score_csv
from edgevae.agent.table import Table, write_table
from edgevae.core.drift import (
    MIN_SCORES,
    ChannelRanges,
    ks_distance,
    out_of_range,
    population_stability,
    score_quantiles,
    score_shift,
)
from edgevae.core.errors import BundleError

RNG = np.random.default_rng(0)
CALIBRATION = RNG.gamma(2.0, 1.0, 5000)
QUANTILES = score_quantiles(CALIBRATION)


@pytest.mark.parametrize(
    ("recent", "verdict", "direction"),
    [
        (np.random.default_rng(1).gamma(2.0, 1.0, 1000), "ok", None),  # the same distribution
        (np.random.default_rng(2).gamma(2.0, 1.0, 1000) * 1.45, "moderate", "higher"),
        (np.random.default_rng(3).gamma(2.0, 1.0, 1000) * 3.0, "shift", "higher"),
        # One-sided: scores lower than calibration (the model's own training rows score so) raise nothing.
        (np.random.default_rng(4).gamma(2.0, 1.0, 1000) * 0.2, "ok", "lower"),
        (np.full(1000, np.inf), "shift", "higher"),  # a model that overflows is as far as it gets
        (np.random.default_rng(5).gamma(2.0, 1.0, MIN_SCORES - 1) * 9, "insufficient", "higher"),
    ],
)
def test_score_shift_reads_the_psi_as_documented(recent: np.ndarray, verdict: str, direction: str | None) -> None:
    shift = score_shift(recent, QUANTILES)
    assert shift.verdict == verdict, shift
    assert shift.psi is None or (verdict == "ok") == (shift.psi < 0.1 or shift.direction == "lower")
    if direction is not None:
        assert shift.direction == direction


def test_psi_and_ks_are_near_zero_for_the_calibration_itself_and_grow_with_the_move() -> None:
    same = population_stability(CALIBRATION, QUANTILES)
    assert same < 0.01
    assert ks_distance(CALIBRATION, QUANTILES) < 0.02
    moved = [population_stability(CALIBRATION + shift, QUANTILES) for shift in (0.2, 0.5, 1.0, 2.0)]
    assert moved == sorted(moved)
    assert moved[0] > same
    assert ks_distance(CALIBRATION + 100.0, QUANTILES) == pytest.approx(1.0)


def test_tied_calibration_scores_still_give_a_finite_psi() -> None:
    quantiles = score_quantiles(np.zeros(500))
    assert population_stability(np.zeros(200), quantiles) == pytest.approx(0.0)
    assert np.isfinite(population_stability(np.ones(200), quantiles))
    assert score_shift(np.ones(200), quantiles).verdict == "shift"


RANGES = ChannelRanges.fit([[0.0, 5.0, 1.0], [10.0, 5.0, 2.0]], ["flow", "valve", "temp"])


@pytest.mark.parametrize(
    ("rows", "below", "above", "below_spans", "above_spans"),
    [
        ([[5.0, 5.0, 1.5]], [0, 0, 0], [0, 0, 0], [None] * 3, [None] * 3),  # inside
        ([[10.9, 5.0, 2.09]], [0, 0, 0], [0, 0, 0], [None] * 3, [None] * 3),  # within the 10 % tolerance
        ([[-20.0, 5.0, 1.0]], [1, 0, 0], [0, 0, 0], [2.0, None, None], [None] * 3),  # 2 spans below
        ([[40.0, 6.0, 1.0]], [0, 0, 0], [1, 1, 0], [None] * 3, [3.0, None, None]),  # constant channel: no spans
        ([[np.nan, 5.0, 9.0]], [0, 0, 0], [0, 0, 1], [None] * 3, [None, None, 7.0]),  # NaN is not counted
    ],
)
def test_out_of_range_table(
    rows: list[list[float]],
    below: list[float],
    above: list[float],
    below_spans: list[float | None],
    above_spans: list[float | None],
) -> None:
    check = out_of_range(rows, RANGES)
    assert check.below.tolist() == below
    assert check.above.tolist() == above
    nan = float("nan")
    np.testing.assert_equal(check.below_spans, [nan if v is None else v for v in below_spans])
    np.testing.assert_equal(check.above_spans, [nan if v is None else v for v in above_spans])


def test_values_of_the_wrong_shape_are_refused_with_the_expected_one() -> None:
    with pytest.raises(ValueError, match=r"expected an array shaped \(rows, 3\)"):
        out_of_range([[1.0, 2.0]], RANGES)


def reference() -> DriftReference:
    training = noisy(stream(2000), seed=0)
    return DriftReference.build(ChannelRanges.fit(training, CHANNELS), CALIBRATION)


def test_the_entry_round_trips_and_stays_small() -> None:
    entry = reference().to_entry()
    back = DriftReference.from_entry(entry, CHANNELS)
    assert back.to_entry() == entry
    assert back.source == FROM_ROWS
    assert back.score_count == len(CALIBRATION)
    assert len(str(entry)) < 4000


def _set(entry: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(entry)
    here = broken
    for key in path[:-1]:
        here = here[key]
    if value is KeyError:
        del here[path[-1]]
    else:
        here[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("scores",), KeyError, "missing the key 'scores'"),
        (("scores", "quantiles"), [3.0, 1.0], "non-decreasing"),
        (("scores", "quantiles"), [0.1, "x"], r"scores.quantiles\[1\] must be a finite number"),
        (("scores", "count"), 0, "count must be an integer >= 1"),
        (("channels", "flow", "max"), -1e9, "expected min <= p005 <= p995 <= max"),
        (("channels", "flow", "std"), True, r"\['flow'\].std must be a finite number"),
        (("channels", "flow"), KeyError, r"missing \['flow'\]"),
        (("rows",), -3, "rows must be an integer >= 1"),
    ],
)
def test_a_bad_distribution_entry_names_the_key(path: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        DriftReference.from_entry(_set(reference().to_entry(), path, value), CHANNELS)


def test_a_bundle_with_a_bad_distribution_does_not_load(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", distribution=True)
    manifest = load_bundle(root).manifest
    document = json.loads((root / "manifest.json").read_text())
    document["distribution"] = _set(manifest.distribution, ("scores", "quantiles"), [0.5, 0.1])
    (root / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"invalid manifest: .*scores.quantiles must be at least 2 non-decreasing"):
        load_bundle(root)


def test_the_monitor_keeps_a_bounded_window_per_device_and_says_when_a_verdict_changes() -> None:
    monitor = DriftMonitor(reference(), rows=200, scores=200)
    assert not monitor.changed()  # nothing observed
    monitor.observe_values("pump", noisy(stream(1000, phase=0.3), seed=1))
    monitor.observe_scores("pump", np.random.default_rng(7).gamma(2.0, 1.0, 1000))
    assert monitor.changed()
    assert monitor.report()["devices"]["pump"]["verdict"] == "ok"
    assert not monitor.changed()  # same verdicts: nothing to publish
    moved = noisy(stream(200, phase=0.3), seed=2)
    moved[:, 0] += 20 * STD[0]
    monitor.observe_values("pump", moved)  # the window now holds only the moved rows
    assert monitor.changed()
    device = monitor.report()["devices"]["pump"]
    assert device["verdict"] == "shift"
    assert device["inputs"]["rows"] == 200
    assert device["inputs"]["outside"][CHANNELS[0]]["above"] == 1.0
    monitor.forget("pump")
    assert monitor.report()["devices"] == {}


def test_warnings_name_the_channels_out_of_range_and_the_score_shift(tmp_path: Path) -> None:
    manifest = load_bundle(make_bundle(tmp_path / "b", distribution=True)).manifest
    same = noisy(stream(1000, phase=0.3), seed=3)
    assert drift_warnings(manifest, same, reference_scores(same, WINDOW, STRIDE)[0]) == []
    moved = same.copy()
    moved[:, 2] -= 30 * STD[2]
    lines = drift_warnings(manifest, moved, np.full(500, 1e6))
    assert lines[0].startswith(f"input outside the training range: {CHANNELS[2]} 100% of rows below it (by ")
    assert lines[1].startswith("score distribution shifted from calibration (PSI ")
    assert lines[1].endswith("> 0.25, scores higher)")
    plain = load_bundle(make_bundle(tmp_path / "plain")).manifest
    assert drift_warnings(plain, moved, np.full(500, 1e6)) == []  # a bundle without a distribution


def test_edgevae_score_warns_of_a_file_off_the_training_point(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", distribution=True, stride=1)
    rows = 600
    same = tmp_path / "same.csv"
    write_table(Table(str(same), timestamps(rows), noisy(stream(rows, phase=0.3), seed=4), CHANNELS, None), same)
    assert score_csv(bundle, same, tmp_path / "same-scores.csv").drift == ()
    values = noisy(stream(rows, phase=0.3), seed=4)
    values[:, 1] += 15 * STD[1]
    moved = tmp_path / "moved.csv"
    write_table(Table(str(moved), timestamps(rows), values, CHANNELS, None), moved)
    summary = score_csv(bundle, moved, tmp_path / "moved-scores.csv")
    assert len(summary.drift) == 2, summary.drift
    assert f"warning: input outside the training range: {CHANNELS[1]} 100% of rows above it" in str(summary)
