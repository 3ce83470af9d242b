"""Deciding, apart from scoring: the alert threshold on a window's score, and the debounce that turns window
decisions into alerts. `Threshold` and `Debounce` are also the bundle manifest's entries for them, so the
rule a device applies is the rule export wrote down."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Threshold:
    """A window is anomalous when its score is above `value`; `method`, `params` and `calibration_windows`
    record how the value was chosen."""

    value: float
    method: str = "manual"
    params: dict[str, Any] = field(default_factory=dict)
    calibration_windows: int = 0

    def is_anomalous(self, scores: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Element-wise decision: True above the threshold, and True for a NaN score.

        Readings are validated finite before scoring, so a NaN score means the model overflowed on them:
        that is as far from normal as a window gets, and treating it as normal would hide the fault.

        >>> Threshold(1.0).is_anomalous([0.5, 1.0, 1.5, float("nan")]).tolist()
        [False, False, True, True]
        """
        return ~(np.asarray(scores, dtype=np.float64) <= self.value)

    def classify(self, score: float) -> bool:
        """`is_anomalous` for one score.

        >>> Threshold(1.0).classify(1.5), Threshold(1.0).classify(1.0), Threshold(1.0).classify(float("nan"))
        (True, False, True)
        """
        return not score <= self.value


@dataclass(frozen=True)
class Debounce:
    """`trigger` consecutive anomalous windows open an alert; `clear` normal ones close it."""

    # In windows, so in readings at the default stride of 1. A long clear keeps one fault one alert: on SKAB's
    # leaderboard, clear 30 scored F1 0.803 against 0.777 for clear 5 (docs/skab/model-selection.md).
    trigger: int = 3
    clear: int = 30

    def __post_init__(self) -> None:
        if isinstance(self.trigger, bool) or isinstance(self.clear, bool):
            msg = f"trigger and clear must be integers >= 1, got trigger={self.trigger!r} clear={self.clear!r}"
            raise ValueError(msg)
        if not (isinstance(self.trigger, int) and isinstance(self.clear, int)) or self.trigger < 1 or self.clear < 1:
            msg = f"trigger and clear must be integers >= 1, got trigger={self.trigger!r} clear={self.clear!r}"
            raise ValueError(msg)


class Transition(str, Enum):
    NONE = "none"
    OPEN = "open"
    CLOSE = "close"


class Debouncer:
    """One device's alert state under a `Debounce` rule.

    >>> d = Debouncer(Debounce(trigger=2, clear=1))
    >>> [d.update(a).value for a in (True, True, True, False)]
    ['none', 'open', 'none', 'close']
    """

    def __init__(self, rule: Debounce) -> None:
        self.rule = rule
        self.is_open = False
        self._run = 0  # windows in a row that argue for leaving the current state

    def resume_open(self) -> None:
        """Take up an alert that was open before a restart: open, with no normal windows counted yet."""
        self.is_open = True
        self._run = 0

    def update(self, anomalous: bool) -> Transition:
        if anomalous != self.is_open:
            self._run += 1
        else:
            self._run = 0
        if self._run >= (self.rule.clear if self.is_open else self.rule.trigger):
            self._run = 0
            self.is_open = not self.is_open
            return Transition.OPEN if self.is_open else Transition.CLOSE
        return Transition.NONE
