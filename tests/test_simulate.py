"""The simulated pump: determinism, correlated channels, and faults confined to their channel and rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edgevae.training.simulate import CHANNELS, FAULT_KINDS, SPREAD, Fault, random_faults, simulate_plant

ROWS = 6000


def test_deterministic_by_seed() -> None:
    a, b, c = simulate_plant(ROWS, seed=3), simulate_plant(ROWS, seed=3), simulate_plant(ROWS, seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    assert a.channels == CHANNELS
    assert np.isfinite(a.values).all()


def test_time_axis() -> None:
    table = simulate_plant(10, sample_period_s=0.5, start_time=100.0)
    np.testing.assert_allclose(table.timestamps, 100.0 + 0.5 * np.arange(10))
    assert table.labels is not None
    assert table.labels.sum() == 0


def test_channels_follow_the_shared_load() -> None:
    values = simulate_plant(20_000, seed=0).values
    corr = np.corrcoef(values.T)
    pair = corr[CHANNELS.index("current"), CHANNELS.index("vibration")]
    assert pair > 0.9
    # voltage sags as current rises
    assert corr[CHANNELS.index("current"), CHANNELS.index("voltage")] < -0.5


def test_temperature_lags_load() -> None:
    values = simulate_plant(20_000, seed=0).values
    current, temperature = values[:, CHANNELS.index("current")], values[:, CHANNELS.index("temperature")]
    lags = [0, 200, 400, 800]
    corr = [np.corrcoef(current[: len(current) - lag], temperature[lag:])[0, 1] for lag in lags]
    assert int(np.argmax(corr)) > 0


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_changes_only_its_channel_and_rows(kind: str) -> None:
    fault = Fault("pressure", start=2000, length=200, kind=kind, magnitude=1.0)
    clean = simulate_plant(ROWS, seed=1)
    faulty = simulate_plant(ROWS, seed=1, faults=[fault])
    changed = np.argwhere(faulty.values != clean.values)
    assert changed.size > 0
    assert set(changed[:, 1].tolist()) == {CHANNELS.index("pressure")}
    assert changed[:, 0].min() >= fault.start
    assert changed[:, 0].max() < fault.stop
    assert faulty.labels is not None
    np.testing.assert_array_equal(np.flatnonzero(faulty.labels), np.arange(fault.start, fault.stop))
    # clearly anomalous: a large part of the channel's normal spread, many times its noise (0.08 bar)
    c = CHANNELS.index("pressure")
    assert np.abs(faulty.values[:, c] - clean.values[:, c]).max() > 0.3 * SPREAD[c]


def test_random_faults_are_spaced_and_deterministic() -> None:
    faults = random_faults(ROWS, count=8, seed=5, min_gap=200)
    assert faults == random_faults(ROWS, count=8, seed=5, min_gap=200)
    assert faults != random_faults(ROWS, count=8, seed=6, min_gap=200)
    assert faults[0].start >= 200
    for before, after in zip(faults, faults[1:], strict=False):
        assert after.start - before.stop >= 200
    assert faults[-1].stop <= ROWS - 200
    assert {f.channel for f in faults} <= set(CHANNELS)
    table = simulate_plant(ROWS, seed=5, faults=faults)
    assert table.labels is not None
    assert int(table.labels.sum()) == sum(f.length for f in faults)


def test_random_faults_channel_choice() -> None:
    faults = random_faults(ROWS, count=5, seed=0, channels=["flow"])
    assert {f.channel for f in faults} == {"flow"}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Fault("flow", 0, 10, "melt", 1.0), "kind must be one of"),
        (lambda: Fault("flow", 0, 0, "spike", 1.0), "length >= 1"),
        (lambda: simulate_plant(100, faults=[Fault("flux", 0, 10, "spike", 1.0)]), "channel must be one of"),
        (lambda: simulate_plant(100, faults=[Fault("flow", 95, 10, "spike", 1.0)]), "past the end"),
        (lambda: random_faults(1000, count=10, seed=0), "need about"),
        (lambda: simulate_plant(0), "rows >= 1"),
    ],
)
def test_bad_arguments(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
