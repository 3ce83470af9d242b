"""The manifest's `distribution` entry: what the model was trained and calibrated on, for drift checks.

`edgevae export` writes it from the run's training rows and the shipped model's calibration scores:

    "distribution": {
      "channels": {"flow": {"min": 118.2, "max": 126.9, "p005": 119.0, "p995": 126.1,
                            "mean": 122.4, "std": 1.3}, ...},
      "rows": 6608,
      "source": "training rows",
      "scores": {"quantiles": [0.012, 0.015, ..., 0.31], "count": 1843}
    }

`channels` has one entry per manifest channel (edgevae.core.drift.ChannelRanges); `rows` is how many
training rows they summarise, and `source` "training windows" for runs trained before meta.json kept the
ranges, whose figures come from the run's sample of training windows instead. `scores.quantiles` are the
calibration scores' quantiles at every percentile from 0 to 100 (`count` scores): about 1 kB whatever the
calibration size. A bundle without the entry loads as before; drift is then not checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgevae.core.drift import ChannelRanges, score_quantiles
from edgevae.core.errors import BundleError

CHANNEL_KEYS = ("min", "max", "p005", "p995", "mean", "std")
FROM_ROWS = "training rows"
FROM_WINDOWS = "training windows"


@dataclass(frozen=True, eq=False)
class DriftReference:
    """The `distribution` entry, checked: channel ranges in the manifest's channel order, and the
    calibration scores' quantiles."""

    ranges: ChannelRanges
    score_quantiles: npt.NDArray[np.float64]
    score_count: int
    source: str = FROM_ROWS

    @classmethod
    def build(cls, ranges: ChannelRanges, calibration_scores: npt.ArrayLike, source: str = FROM_ROWS) -> DriftReference:
        scores = np.asarray(calibration_scores, dtype=np.float64).ravel()
        return cls(ranges, score_quantiles(scores), len(scores), source)

    @classmethod
    def from_entry(cls, entry: Any, channels: Sequence[str]) -> DriftReference:
        """The entry read back; a BundleError names the first key that is missing or implausible."""
        where = "manifest distribution"
        scores = _member(entry, "scores", dict, where)
        quantiles = _numbers(_member(scores, "quantiles", list, f"{where}.scores"), f"{where}.scores.quantiles")
        if len(quantiles) < 2 or np.any(np.diff(quantiles) < 0):
            msg = f"{where}.scores.quantiles must be at least 2 non-decreasing numbers, got {len(quantiles)}"
            raise BundleError(msg)
        count = _count(scores, "count", f"{where}.scores")
        source = _member(entry, "source", str, where)
        return cls(ranges_from_entry(entry, channels, where), quantiles, count, source)

    def to_entry(self) -> dict[str, Any]:
        return {
            **ranges_entry(self.ranges),
            "source": self.source,
            "scores": {"quantiles": self.score_quantiles.tolist(), "count": self.score_count},
        }


def ranges_entry(ranges: ChannelRanges) -> dict[str, Any]:
    """`channels` and `rows` of the entry, as training also keeps them in meta.json (`channel_ranges`)."""
    columns = {key: getattr(ranges, key).tolist() for key in CHANNEL_KEYS}
    channels = {name: {key: columns[key][i] for key in CHANNEL_KEYS} for i, name in enumerate(ranges.names)}
    return {"channels": channels, "rows": ranges.rows}


def ranges_from_entry(entry: Any, channels: Sequence[str], where: str = "channel_ranges") -> ChannelRanges:
    """The channel ranges of an entry written by `ranges_entry`, in `channels` order."""
    given = _member(entry, "channels", dict, where)
    missing = [c for c in channels if c not in given]
    extra = sorted(set(given) - set(channels))
    if missing or extra:
        msg = f"{where}.channels must name exactly the model's channels; missing {missing}, unexpected {extra}"
        raise BundleError(msg)
    figures = {key: np.empty(len(channels)) for key in CHANNEL_KEYS}
    for i, name in enumerate(channels):
        here = f"{where}.channels[{name!r}]"
        channel = _member(given, name, dict, f"{where}.channels")
        for key in CHANNEL_KEYS:
            figures[key][i] = _number(_member(channel, key, object, here), f"{here}.{key}")
        low, p005, p995, high, std = (figures[k][i] for k in ("min", "p005", "p995", "max", "std"))
        if not (low <= p005 <= p995 <= high and std >= 0):
            msg = f"{here}: expected min <= p005 <= p995 <= max and std >= 0, got {low}, {p005}, {p995}, {high}, {std}"
            raise BundleError(msg)
    rows = _count(entry, "rows", where)
    return ChannelRanges(tuple(channels), **figures, rows=rows)


def _member(entry: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(entry, dict):
        msg = f"{where} must be a JSON object, got {type(entry).__name__}"
        raise BundleError(msg)
    if key not in entry:
        msg = f"{where} is missing the key {key!r}"
        raise BundleError(msg)
    value = entry[key]
    if not isinstance(value, kind):
        msg = f"{where}.{key} must be a {kind.__name__}, got {value!r}"
        raise BundleError(msg)
    return value


def _number(value: Any, where: str) -> float:
    # A bool is an int in Python; in a manifest it is a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        msg = f"{where} must be a finite number, got {value!r}"
        raise BundleError(msg)
    return float(value)


def _numbers(values: list[Any], where: str) -> npt.NDArray[np.float64]:
    return np.array([_number(v, f"{where}[{i}]") for i, v in enumerate(values)], dtype=np.float64)


def _count(entry: dict[str, Any], key: str, where: str) -> int:
    value = _member(entry, key, int, where)
    if isinstance(value, bool) or value < 1:
        msg = f"{where}.{key} must be an integer >= 1, got {value!r}"
        raise BundleError(msg)
    return int(value)
