"""Drift on the device and offline: each device's recent readings and scores against the bundle's training
distribution (the manifest's `distribution` entry, edgevae.agent.distribution). Pure and I/O-free.

In the agent, one monitor per loaded bundle:

    monitor = DriftMonitor.from_manifest(bundle.manifest)  # None: the bundle carries no distribution
    monitor.observe_values(device, rows)  # (rows, channels) raw readings, in the manifest's channel order
    monitor.observe_scores(device, scores)  # that device's window scores, as they come
    if monitor.changed():  # on the stats interval, not per message
        publish(drift_topic, json.dumps(monitor.report()), retain=True)

Offline (`edgevae score`): `drift_warnings(manifest, values, scores)` gives the lines to print, [] when
the input looks like training or the bundle has no distribution.

Each device keeps the last `rows` readings and `scores` scores (1,000 each by default: about 17 minutes at
one reading a second, 64 kB for 8 channels), so memory is bounded and a drift that ends clears within a
window. Observing is a copy into a ring buffer; the statistics are computed when asked for, and only for
devices observed since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgevae.agent.bundle import Manifest
from edgevae.agent.distribution import DriftReference
from edgevae.core.drift import (
    MIN_ROWS,
    MIN_SCORES,
    OUTSIDE_FRACTION,
    PSI_MODERATE,
    PSI_SHIFT,
    RangeCheck,
    ScoreShift,
    out_of_range,
    score_shift,
)

WINDOW_ROWS = 1000
WINDOW_SCORES = 1000
# A device's overall verdict is the most severe of its two: inputs out of range count as a shift.
SEVERITY = ("ok", "insufficient", "moderate", "shift")


class _Ring:
    """The newest `capacity` rows pushed; their order is not kept, as every statistic here ignores it."""

    def __init__(self, capacity: int, width: int | None) -> None:
        self.data = np.empty((capacity,) if width is None else (capacity, width), dtype=np.float64)
        self.pos = 0
        self.filled = 0

    def push(self, block: npt.NDArray[np.float64]) -> None:
        capacity = len(self.data)
        block = block[-capacity:]
        first = min(len(block), capacity - self.pos)
        self.data[self.pos : self.pos + first] = block[:first]
        self.data[: len(block) - first] = block[first:]
        self.pos = (self.pos + len(block)) % capacity
        self.filled = min(self.filled + len(block), capacity)

    def view(self) -> npt.NDArray[np.float64]:
        return self.data[: self.filled]


@dataclass
class _Device:
    rows: _Ring
    scores: _Ring
    dirty: bool = True  # observed since `report` was last computed
    verdicts: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # as of the last computation


class DriftMonitor:
    """Per-device windows of recent readings and scores, and their drift from the training distribution."""

    def __init__(self, reference: DriftReference, rows: int = WINDOW_ROWS, scores: int = WINDOW_SCORES) -> None:
        if rows < MIN_ROWS or scores < MIN_SCORES:
            msg = f"drift windows must hold at least {MIN_ROWS} rows and {MIN_SCORES} scores, got {rows} and {scores}"
            raise ValueError(msg)
        self.reference = reference
        self.channels = reference.ranges.names
        self._sizes = (rows, scores)
        self._devices: dict[str, _Device] = {}
        self._published: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, rows: int = WINDOW_ROWS, scores: int = WINDOW_SCORES
    ) -> DriftMonitor | None:
        """A monitor for the bundle, or None when its manifest has no `distribution` (older bundles)."""
        reference = reference_of(manifest)
        return None if reference is None else cls(reference, rows, scores)

    def observe_values(self, device: str, values: npt.ArrayLike) -> None:
        """Readings of `device`, shaped (rows, channels) in the manifest's channel order, raw units."""
        block = np.asarray(values, dtype=np.float64)
        if block.ndim != 2 or block.shape[1] != len(self.channels):
            msg = (
                f"drift values of {device!r}: expected (rows, {len(self.channels)}) in channel order, got {block.shape}"
            )
            raise ValueError(msg)
        if len(block):
            entry = self._device(device)
            entry.rows.push(block)
            entry.dirty = True

    def observe_scores(self, device: str, scores: npt.ArrayLike) -> None:
        """Window scores of `device` (any shape; flattened)."""
        block = np.asarray(scores, dtype=np.float64).ravel()
        if len(block):
            entry = self._device(device)
            entry.scores.push(block)
            entry.dirty = True

    def forget(self, device: str) -> None:
        """Drop a device's windows (it left the configuration)."""
        self._devices.pop(device, None)

    def report(self, assess: bool = True) -> dict[str, Any]:
        """JSON-ready: per device, its verdict, the channels out of range and the score shift.

        {"devices": {"pump1": {"verdict": "shift",
          "inputs": {"verdict": "outside", "rows": 1000,
                     "outside": {"flow": {"below": 0.98, "above": 0.0, "below_spans": 2.8, "above_spans": null}}},
          "scores": {"verdict": "shift", "count": 1000, "psi": 4.1, "ks": 0.97, "direction": "higher"}}},
         "thresholds": {...}}

        `below`/`above`: fractions of the window's rows outside the training range (with its tolerance);
        `*_spans`: their median distance from the training min/max in training spans (null: a constant
        channel). Only channels with at least OUTSIDE_FRACTION of their rows outside are listed.
        """
        if assess:
            self._assess_all()
        return {"devices": {name: entry.report for name, entry in self._devices.items()}, "thresholds": thresholds()}

    def verdicts(self, assess: bool = True) -> dict[str, dict[str, Any]]:
        """Per device, what `changed` compares: the verdicts and the names of the channels out of range
        (without `assess`: as each device was last assessed)."""
        if assess:
            self._assess_all()
        return {name: entry.verdicts for name, entry in self._devices.items()}

    def assess(self, device: str) -> None:
        """Bring one device's verdicts and report up to date with what it was given."""
        entry = self._devices.get(device)
        if entry is not None:
            self._assess(entry)

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    def _assess_all(self) -> None:
        for entry in self._devices.values():
            self._assess(entry)

    def _assess(self, entry: _Device) -> None:
        # `changed` then `report`, as the agent calls them, assess each device once: on a hundred devices
        # an assessment of all of them held the agent's scoring loop for some 60 ms.
        if entry.dirty:
            check = self._range_check(entry)
            shift = score_shift(entry.scores.view(), self.reference.score_quantiles)
            entry.report = _device_report(check, shift, self.channels)
            entry.verdicts, entry.dirty = _verdicts(entry.report), False

    def changed(self, assess: bool = True) -> bool:
        """True when a device's verdicts differ from those at the previous call (the first call: True once
        a device has been observed); the moment to publish `report()` as a retained message."""
        current = self.verdicts(assess)
        if current == self._published or not current:
            return False
        self._published = current
        return True

    def _device(self, device: str) -> _Device:
        if device not in self._devices:
            rows, scores = self._sizes
            self._devices[device] = _Device(_Ring(rows, len(self.channels)), _Ring(scores, None))
        return self._devices[device]

    def _range_check(self, entry: _Device) -> RangeCheck:
        return out_of_range(entry.rows.view(), self.reference.ranges)


def reference_of(manifest: Manifest) -> DriftReference | None:
    """The manifest's distribution entry, checked, or None when it has none."""
    if not manifest.distribution:
        return None
    return DriftReference.from_entry(manifest.distribution, manifest.channels)


def thresholds() -> dict[str, float]:
    return {
        "outside_fraction": OUTSIDE_FRACTION,
        "psi_moderate": PSI_MODERATE,
        "psi_shift": PSI_SHIFT,
        "min_rows": MIN_ROWS,
        "min_scores": MIN_SCORES,
    }


def drift_warnings(manifest: Manifest, values: npt.ArrayLike, scores: npt.ArrayLike) -> list[str]:
    """One line per kind of drift in a scored file: `values` (rows, channels) its readings in the
    manifest's channel order, `scores` its window scores. [] when nothing drifted, too few rows or scores
    for a verdict, or the bundle has no distribution.

    "input outside the training range: flow 98% of rows below it (by 2.8x the training span), ..."
    "score distribution shifted from calibration (PSI 4.1 > 0.25, scores higher)"
    """
    reference = reference_of(manifest)
    if reference is None:
        return []
    rows = np.asarray(values, dtype=np.float64)
    check = out_of_range(rows, reference.ranges)
    return warning_lines(reference, check, score_shift(scores, reference.score_quantiles))


def warning_lines(reference: DriftReference, check: RangeCheck, shift: ScoreShift) -> list[str]:
    """`drift_warnings` from the figures it computes, for callers that gathered them another way
    (edgevae.agent.drift_tally, which reads a file chunk by chunk)."""
    report = _device_report(check, shift, reference.ranges.names)
    lines = []
    outside = report["inputs"]["outside"]
    if outside:
        order = sorted(outside, key=lambda c: -(outside[c]["below"] + outside[c]["above"]))
        parts = [_describe_channel(c, outside[c], reference) for c in order]
        lines.append("input outside the training range: " + ", ".join(parts))
    if shift.verdict == "shift":
        lines.append(
            f"score distribution shifted from calibration (PSI {shift.psi:.2g} > {PSI_SHIFT}, scores {shift.direction})"
        )
    elif shift.verdict == "moderate":
        lines.append(
            f"score distribution moderately shifted from calibration (PSI {shift.psi:.2g}, between {PSI_MODERATE} "
            f"and {PSI_SHIFT}, scores {shift.direction})"
        )
    return lines


def _device_report(check: RangeCheck, shift: ScoreShift, names: tuple[str, ...]) -> dict[str, Any]:
    rows = int(check.rows.max()) if len(check.rows) else 0
    flagged = np.flatnonzero(check.flagged()) if rows >= MIN_ROWS else np.array([], dtype=np.int64)
    outside = {
        names[i]: {
            "below": round(float(check.below[i]), 4),
            "above": round(float(check.above[i]), 4),
            "below_spans": _figure(check.below_spans[i]),
            "above_spans": _figure(check.above_spans[i]),
        }
        for i in flagged
    }
    inputs = "insufficient" if rows < MIN_ROWS else "outside" if outside else "ok"
    scores = {
        "verdict": shift.verdict,
        "count": shift.count,
        "psi": None if shift.psi is None else round(shift.psi, 4),
        "ks": None if shift.ks is None else round(shift.ks, 4),
        "direction": shift.direction,
    }
    severity = max(SEVERITY.index("shift" if inputs == "outside" else inputs), SEVERITY.index(shift.verdict))
    return {
        "verdict": SEVERITY[severity],
        "inputs": {"verdict": inputs, "rows": rows, "outside": outside},
        "scores": scores,
    }


def _verdicts(device: dict[str, Any]) -> dict[str, Any]:
    inputs = device["inputs"]
    return {
        "verdict": device["verdict"],
        "inputs": inputs["verdict"],
        "scores": device["scores"]["verdict"],
        "channels": sorted(inputs["outside"]),
    }


def _figure(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 3)


def _describe_channel(name: str, figures: dict[str, Any], reference: DriftReference) -> str:
    i = reference.ranges.names.index(name)
    if reference.ranges.constant[i]:
        share = _percent(figures["below"] + figures["above"])
        return f"{name} {share} of rows differ from its constant training value {reference.ranges.min[i]:g}"
    sides = [(figures[side], figures[f"{side}_spans"], side) for side in ("below", "above") if figures[side] > 0]
    sides.sort(key=lambda s: -s[0])
    (share, spans, side), *rest = sides
    text = f"{name} {_percent(share)} of rows {side} it (by {_spans(spans)}x the training span)"
    for share, spans, side in rest:
        text += f" and {_percent(share)} {side} (by {_spans(spans)}x)"
    return text


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 else f"{100 * fraction:.1g}%"


def _spans(spans: float | None) -> str:
    if spans is None:
        return "?"
    return f"{spans:.1f}" if spans >= 1 else f"{spans:.2f}"
