"""Deciding, apart from scoring: a score threshold and the debounce that turns window decisions into alerts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Threshold:
    """A window is anomalous when its score is above `value`."""

    value: float

    def classify(self, score: float) -> bool:
        """True for a score above the threshold, and for a NaN score.

        The inputs are validated finite, so a NaN score means the model overflowed on them: that is as far
        from normal as a window gets.

        >>> Threshold(1.0).classify(1.5), Threshold(1.0).classify(1.0)
        (True, False)
        """
        return not score <= self.value


class Transition(str, Enum):
    NONE = "none"
    OPEN = "open"
    CLOSE = "close"


class Debounce:
    """One device's alert state: `trigger` anomalous windows in a row open an alert, `clear` normal ones end it.

    >>> d = Debounce(trigger=2, clear=1)
    >>> [d.update(a).value for a in (True, True, True, False)]
    ['none', 'open', 'none', 'close']
    """

    def __init__(self, trigger: int, clear: int) -> None:
        if trigger < 1 or clear < 1:
            msg = f"trigger and clear must be >= 1, got trigger={trigger} clear={clear}"
            raise ValueError(msg)
        self.trigger = trigger
        self.clear = clear
        self.is_open = False
        self._run = 0  # windows in a row that argue for leaving the current state

    def update(self, anomalous: bool) -> Transition:
        if anomalous != self.is_open:
            self._run += 1
        else:
            self._run = 0
        if self._run >= (self.clear if self.is_open else self.trigger):
            self._run = 0
            self.is_open = not self.is_open
            return Transition.OPEN if self.is_open else Transition.CLOSE
        return Transition.NONE
