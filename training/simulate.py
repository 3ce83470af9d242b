"""A simulated pump whose sensors share one load, with injectable single-channel faults, for demos and tests."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgevae.agent.table import Table

logger = logging.getLogger(__name__)

CHANNELS = ("vibration", "current", "pressure", "temperature", "flow", "voltage")
FAULT_KINDS = ("spike", "drift", "stuck", "noise", "offset")
DEFAULT_START_TIME = 1_704_067_200.0  # 2024-01-01T00:00:00Z
# Each channel's normal spread (standard deviation over a day of varied load), the unit of fault magnitudes.
# Noise sigmas would be the wrong unit: the motor temperature lags load by minutes, so a short window cannot
# predict it to within its noise, and a fault a few noise sigmas large is invisible there.
SPREAD = np.array([0.56, 2.3, 1.27, 5.8, 6.5, 4.6])
# Per kind: (min, max) length in rows and (min, max) magnitude in channel spreads, for random_faults.
FAULT_SHAPES: dict[str, tuple[tuple[int, int], tuple[float, float]]] = {
    "spike": ((3, 8), (2.5, 4.0)),
    "drift": ((150, 400), (1.0, 1.5)),
    "stuck": ((80, 300), (0.8, 1.2)),
    "noise": ((80, 300), (0.3, 0.5)),
    "offset": ((80, 300), (0.8, 1.2)),
}


@dataclass(frozen=True)
class Fault:
    """A fault on one channel over rows [start, start + length).

    `magnitude` is in units of the channel's normal spread (`SPREAD`):
    spike: a short burst that far off; drift: a linear ramp reaching it; stuck: the reading freezes at its
    value at `start` shifted by it; noise: extra white noise of that sigma; offset: a constant shift.
    """

    channel: str
    start: int
    length: int
    kind: str
    magnitude: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            msg = f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}"
            raise ValueError(msg)
        if self.start < 0 or self.length < 1 or self.magnitude < 0:
            msg = f"expected start >= 0, length >= 1 and magnitude >= 0, got {self}"
            raise ValueError(msg)

    @property
    def stop(self) -> int:
        return self.start + self.length


def simulate_plant(
    rows: int,
    seed: int = 0,
    sample_period_s: float = 1.0,
    faults: Sequence[Fault] = (),
    start_time: float = DEFAULT_START_TIME,
) -> Table:
    """A centrifugal pump on a variable-speed drive; labels are 1 inside the faults.

    Every channel follows the drive speed through the pump affinity laws (flow ~ speed, pressure ~ speed^2,
    power and so current ~ speed^3), vibration grows with speed^2, the motor temperature follows power with
    a lag of minutes and the supply voltage sags with current. A fault on one channel breaks its
    relation to the others, which a multivariate model sees even when the reading stays in its normal range.
    """
    if rows < 1 or sample_period_s <= 0:
        msg = f"expected rows >= 1 and sample_period_s > 0, got rows={rows} sample_period_s={sample_period_s}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    dt = sample_period_s
    t = np.arange(rows) * dt

    # Drive speed: set-points held 3-15 min, ramped smoothly by the drive, plus slow wander in demand.
    setpoint = np.empty(rows)
    i = 0
    while i < rows:
        hold = max(1, int(rng.uniform(180.0, 900.0) / dt))
        setpoint[i : i + hold] = rng.uniform(0.4, 1.0)
        i += hold
    wander = _lag(rng.normal(0.0, 1.0, rows), tau_rows=600.0 / dt) * np.sqrt(2 * 600.0 / dt) * 0.02
    speed = np.clip(_lag(setpoint, tau_rows=90.0 / dt, initial=setpoint[0]) + wander, 0.25, 1.05)
    power = speed**3

    ambient = 22.0 + 0.3 * np.sin(2 * np.pi * (t / 86_400.0 + rng.uniform()))
    current = 3.0 + 9.0 * _lag(power, tau_rows=2.0 / dt, initial=power[0])  # A
    clean = np.stack(
        [
            0.6 + 2.4 * speed**2,  # vibration RMS, mm/s
            current,
            0.5 + 5.5 * speed**2,  # discharge pressure, bar
            ambient + 30.0 * _lag(power, tau_rows=400.0 / dt, initial=power[0]),  # motor temperature, degC
            40.0 * _lag(speed, tau_rows=3.0 / dt, initial=speed[0]),  # flow, m3/h
            400.0 - 2.0 * (current - 3.0),  # supply voltage, V: sags under load
        ],
        axis=1,
    )
    sigma = np.array([0.06, 0.15, 0.08, 0.15, 0.5, 0.3])
    noise = rng.normal(0.0, 1.0, (rows, len(CHANNELS))) * sigma
    noise[:, 0] *= 0.5 + 0.5 * speed  # vibration noise grows with speed
    values = clean + noise

    labels = np.zeros(rows, dtype=np.int8)
    for k, fault in enumerate(faults):
        _apply_fault(values, fault, SPREAD, np.random.default_rng([seed, 1, k]))
        labels[fault.start : fault.stop] = 1
    logger.debug("simulated %d rows (seed %d) with %d faults", rows, seed, len(faults))
    timestamps = start_time + t
    return Table(f"simulated:pump:seed={seed}", timestamps, values, CHANNELS, labels)


def random_faults(
    rows: int,
    count: int,
    seed: int,
    channels: Sequence[str] = CHANNELS,
    min_gap: int = 256,
    kinds: Sequence[str] = FAULT_KINDS,
) -> list[Fault]:
    """`count` non-overlapping faults in row order, at least `min_gap` normal rows before each and after the last."""
    rng = np.random.default_rng([seed, 2])
    picked = [str(kinds[int(rng.integers(len(kinds)))]) for _ in range(count)]
    lengths = [int(rng.integers(FAULT_SHAPES[kind][0][0], FAULT_SHAPES[kind][0][1] + 1)) for kind in picked]
    slack = rows - sum(lengths) - (count + 1) * min_gap
    if slack < 0:
        msg = f"{count} faults with min_gap={min_gap} need about {rows - slack} rows, got rows={rows}"
        raise ValueError(msg)
    extra = rng.multinomial(slack, [1.0 / (count + 1)] * (count + 1))
    faults, start = [], 0
    for k, (kind, length) in enumerate(zip(picked, lengths, strict=True)):
        start += min_gap + int(extra[k])
        low, high = FAULT_SHAPES[kind][1]
        channel = str(channels[int(rng.integers(len(channels)))])
        faults.append(Fault(channel, start, length, kind, round(float(rng.uniform(low, high)), 2)))
        start += length
    return faults


def _lag(x: np.ndarray, tau_rows: float, initial: float = 0.0) -> np.ndarray:
    """First-order lag y' = (x - y) / tau, discretized exactly for a piecewise-constant input."""
    alpha = 1.0 - np.exp(-1.0 / max(tau_rows, 1e-9))
    out = np.empty_like(x, dtype=np.float64)
    y = initial
    for i, xi in enumerate(x.tolist()):
        y += alpha * (xi - y)
        out[i] = y
    return out


def _apply_fault(values: np.ndarray, fault: Fault, spread: np.ndarray, rng: np.random.Generator) -> None:
    if fault.channel not in CHANNELS:
        msg = f"fault channel must be one of {CHANNELS}, got {fault.channel!r}"
        raise ValueError(msg)
    if fault.stop > values.shape[0]:
        msg = f"fault rows [{fault.start}, {fault.stop}) run past the end of {values.shape[0]} rows"
        raise ValueError(msg)
    c = CHANNELS.index(fault.channel)
    span = values[fault.start : fault.stop, c]  # a view: edits land in `values`
    size = float(fault.magnitude * spread[c])
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    if fault.kind == "spike":
        span += sign * size
    elif fault.kind == "drift":
        span += sign * size * np.linspace(1.0 / fault.length, 1.0, fault.length)
    elif fault.kind == "stuck":
        span[:] = span[0] + sign * size
    elif fault.kind == "noise":
        span += rng.normal(0.0, size, fault.length)
    else:
        span += sign * size
