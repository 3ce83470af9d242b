"""Readings in, decisions out: every device's due windows scored in micro-batches, then debounced into alerts."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edgevae.agent.backends.base import Backend, ScoreOutputs
from edgevae.agent.bundle import Manifest
from edgevae.core.decision import Debounce, Debouncer, Transition
from edgevae.core.errors import BackendError
from edgevae.core.window import OnlineWindow

# Fewer readings than this go in one by one: the block's array set-up costs more than it saves.
SMALL_BLOCK = 8


@dataclass(frozen=True)
class WindowResult:
    device: str
    index: int  # the device's reading count at the window's last reading (1-based, never reset)
    start_ts: float
    end_ts: float
    score: float
    channel_error: np.ndarray  # (channels,) float32
    anomalous: bool  # this window's score alone is above the threshold
    alert_open: bool  # the debounced decision after this window


# Why an alert ended: its device's windows went back below the threshold (`cleared`), or the agent restarted
# with another model, under which the alert cannot continue (`model_changed`).
EndReason = Literal["cleared", "model_changed"]


@dataclass(frozen=True)
class AlertEvent:
    """An alert opened (`alert`) or ended (`end`) on `window`."""

    type: Literal["alert", "end"]
    device: str
    window: WindowResult
    started_ts: float  # end of the first anomalous window of the run that opened the alert
    peak: WindowResult  # highest-scoring window since started_ts
    reason: EndReason | None = None  # set on `end`


@dataclass(frozen=True)
class OpenAlert:
    """What an open alert needs to continue after a restart: kept in the state database."""

    device: str
    started_ts: float
    peak: WindowResult

    def to_record(self) -> dict[str, Any]:
        p = self.peak
        peak = {"index": p.index, "start_ts": p.start_ts, "end_ts": p.end_ts, "score": p.score}
        # JSON has no NaN or infinity: a score that overflowed is kept as the largest float, as alerts show it.
        peak["score"] = p.score if math.isfinite(p.score) else sys.float_info.max
        error = np.nan_to_num(p.channel_error.astype(np.float32), posinf=np.finfo(np.float32).max)
        peak["channel_error"] = error.astype(np.float64).tolist()
        return {"device": self.device, "started_ts": self.started_ts, "peak": peak}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> OpenAlert:
        """Raises KeyError, TypeError or ValueError on a record this code did not write."""
        p = record["peak"]
        error = np.asarray(p["channel_error"], dtype=np.float32)
        peak = WindowResult(
            str(record["device"]), int(p["index"]), float(p["start_ts"]), float(p["end_ts"]), float(p["score"]),
            error, anomalous=True, alert_open=True,
        )  # fmt: skip
        return cls(str(record["device"]), float(record["started_ts"]), peak)


@dataclass
class StepResult:
    windows: list[WindowResult] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)
    # Devices whose open alert began, ended or reached a new peak: their `open_alert` changed.
    changed: set[str] = field(default_factory=set)


@dataclass
class _Pending:
    device: str
    index: int
    start_ts: float
    end_ts: float
    window: np.ndarray


@dataclass
class Due:
    """Windows taken for scoring and their backend batches (`max_batch` windows at most each)."""

    windows: list[_Pending]
    batches: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.windows)


class _DeviceState:
    def __init__(self, manifest: Manifest, debounce: Debounce) -> None:
        self.window = OnlineWindow(manifest.window, manifest.stride, len(manifest.channels))
        self.debounce = Debouncer(debounce)
        self.readings = 0
        self.run_start: float | None = None  # set while anomalous windows lead towards, or hold, an alert
        self.peak: WindowResult | None = None


class Detector:
    """Orchestrates `window`, a backend and `threshold`, with no MQTT and no files, so the live agent and
    offline scoring (`edgevae.agent.offline`) make the same decisions on the same readings."""

    def __init__(
        self,
        manifest: Manifest,
        backend: Backend,
        debounce: Debounce | None = None,
        max_batch: int = 256,
        max_gap_periods: float = 0.0,
    ) -> None:
        if max_batch < 1:
            msg = f"max_batch must be >= 1, got {max_batch}"
            raise ValueError(msg)
        self.manifest = manifest
        self.backend = backend
        self.threshold = manifest.threshold
        self.debounce = debounce or manifest.debounce
        self.max_batch = max_batch
        # 0 disables: every reading continues the window however long the silence before it.
        self.max_gap_periods = max_gap_periods
        self.max_gap_s = max_gap_periods * manifest.sample_period_s
        self._devices: dict[str, _DeviceState] = {}
        self._pending: list[_Pending] = []
        # Called with each scored batch (windows, scores, seconds): how a candidate model shadows this one.
        self.observer: Callable[[np.ndarray, np.ndarray, float], None] | None = None
        self.gap_resets = 0
        self.batches = 0
        self.windows_scored = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def devices(self) -> int:
        return len(self._devices)

    @property
    def open_alerts(self) -> int:
        return sum(d.debounce.is_open for d in self._devices.values())

    def forget(self, device: str) -> bool:
        """Free a device's state, unless it has an open alert or windows waiting to be scored (then False)."""
        state = self._devices.get(device)
        if state is None:
            return True
        if state.debounce.is_open or any(p.device == device for p in self._pending):
            return False
        del self._devices[device]
        return True

    def open_alert(self, device: str) -> OpenAlert | None:
        state = self._devices.get(device)
        if state is None or not state.debounce.is_open or state.run_start is None or state.peak is None:
            return None
        return OpenAlert(device, state.run_start, state.peak)

    def resume(self, alert: OpenAlert) -> None:
        """Continue an alert that was open when the agent stopped: the device starts with an empty window, and
        the alert ends (under its id) only after `clear` normal windows, as if the agent had never stopped."""
        state = self._devices.get(alert.device)
        if state is None:
            state = self._devices[alert.device] = _DeviceState(self.manifest, self.debounce)
        state.debounce.resume_open()
        state.run_start, state.peak = alert.started_ts, alert.peak

    def swap(self, manifest: Manifest, backend: Backend, debounce: Debounce) -> list[OpenAlert]:
        """Score with another model from the next window on; call between two `step`s (nothing pending).

        Each device keeps its buffered readings when window and stride are the same (its columns put in the
        new channel order), so every reading ends up in the windows of one model or the other, never in
        both and never in none; with another window or stride each device's window starts afresh. Alert
        state starts afresh too: returns the alerts that were open, for the caller to end.
        """
        if self._pending:
            msg = "swap with windows pending: call it right after step()"
            raise RuntimeError(msg)
        same_shape = (manifest.window, manifest.stride) == (self.manifest.window, self.manifest.stride)
        order = [self.manifest.channels.index(c) for c in manifest.channels]
        was_open = [a for a in (self.open_alert(d) for d in self._devices) if a is not None]
        for state in self._devices.values():
            if same_shape:
                state.window.reorder(order)
            else:
                state.window = OnlineWindow(manifest.window, manifest.stride, len(manifest.channels))
            state.debounce = Debouncer(debounce)
            state.run_start, state.peak = None, None
        self.max_gap_s = self.max_gap_periods * manifest.sample_period_s
        self.manifest, self.backend, self.threshold, self.debounce = manifest, backend, manifest.threshold, debounce
        return was_open

    def push(self, device: str, ts: float, values: np.ndarray) -> bool:
        """Add one reading (values in the manifest's channel order); True when it makes a window due."""
        state = self._devices.get(device)
        if state is None:
            state = self._devices[device] = _DeviceState(self.manifest, self.debounce)
        last = state.window.last_ts
        if last is not None and (ts < last or (self.max_gap_s > 0 and ts - last > self.max_gap_s)):
            # Readings across a long gap never formed a window in training, nor do readings across a clock that
            # stepped back (OrderGuard re-anchored the device): start a fresh window.
            state.window.reset()
            self.gap_resets += 1
        state.readings += 1
        if not state.window.push(ts, values):
            return False
        start, end = state.window.span()
        self._pending.append(_Pending(device, state.readings, start, end, state.window.window()))
        return True

    def push_block(self, device: str, ts: np.ndarray, values: np.ndarray) -> int:
        """Add a message's readings, (n,) `ts` and (n, channels) `values`, as `push` one by one would; returns
        how many windows they make due."""
        if len(ts) < SMALL_BLOCK:
            return sum(self.push(device, t, row) for t, row in zip(ts.tolist(), values, strict=True))
        state = self._devices.get(device)
        if state is None:
            state = self._devices[device] = _DeviceState(self.manifest, self.debounce)
        last = state.window.last_ts
        steps = np.diff(ts, prepend=ts[0] if last is None else last)
        if (steps < 0).any() or (self.max_gap_s > 0 and (steps > self.max_gap_s).any()):
            return sum(self.push(device, t, row) for t, row in zip(ts.tolist(), values, strict=True))
        first = state.readings + 1
        state.readings += len(ts)
        block = state.window.push_block(ts, values)
        for window, start, end, k in zip(
            block.windows, block.start_ts.tolist(), block.end_ts.tolist(), block.ends.tolist(), strict=True
        ):
            self._pending.append(_Pending(device, first + k, start, end, window))
        return len(block.ends)

    def step(self) -> StepResult:
        """Score every due window, at most `max_batch` per backend call, and update each device's alert state.

        Never waits for a batch to fill: whatever is due now is scored now. If the backend fails, the due
        windows are discarded (not retried) and BackendError propagates.
        """
        due = self.take()
        return self.decide(due, self.score(due))

    def take(self) -> Due:
        """The due windows, stacked into backend batches; they are no longer pending. `score` then `decide`
        them (the agent scores on a thread of its own while it reads the next messages)."""
        pending, self._pending = self._pending, []
        chunks = range(0, len(pending), self.max_batch)
        return Due(pending, [np.stack([p.window for p in pending[i : i + self.max_batch]]) for i in chunks])

    def score(self, due: Due) -> list[tuple[ScoreOutputs, float]]:
        """Run the backend on each batch: (outputs, seconds). Touches nothing but the backend."""
        runs = []
        for batch in due.batches:
            started = time.perf_counter()
            out = self.backend.run(batch)
            runs.append((out, time.perf_counter() - started))
        return runs

    def decide(self, due: Due, runs: list[tuple[ScoreOutputs, float]]) -> StepResult:
        """Update each device's alert state with the scores of `due` (in order, as they were taken)."""
        channels = len(self.manifest.channels)
        for batch, (out, seconds) in zip(due.batches, runs, strict=True):
            n = len(batch)
            if out.score.shape != (n,) or out.channel_error.shape != (n, channels):
                msg = (
                    f"backend {self.backend.key!r} returned score {out.score.shape} and channel_error "
                    f"{out.channel_error.shape} for a batch of {n}; expected ({n},) and ({n}, {channels})"
                )
                raise BackendError(msg)
            self.batches += 1
            if self.observer is not None:
                self.observer(batch, out.score, seconds)
        result = StepResult()
        scores = [s for out, _ in runs for s in out.score.tolist()]
        errors = [e for out, _ in runs for e in out.channel_error]
        for item, score, error in zip(due.windows, scores, errors, strict=True):
            if item.device in self._devices:  # not forgotten while its window was being scored
                self._decide(item, float(score), error, result)
        self.windows_scored += len(due.windows)
        return result

    def _decide(self, item: _Pending, score: float, error: np.ndarray, result: StepResult) -> None:
        state = self._devices[item.device]
        anomalous = self.threshold.classify(score)
        if not state.debounce.is_open:
            if not anomalous:
                state.run_start, state.peak = None, None
            elif state.run_start is None:
                state.run_start = item.end_ts
        transition = state.debounce.update(anomalous)
        window = WindowResult(
            item.device, item.index, item.start_ts, item.end_ts, score, error, anomalous, state.debounce.is_open
        )
        result.windows.append(window)
        if state.run_start is None:
            return
        if state.peak is None or score > state.peak.score:
            state.peak = window
            if state.debounce.is_open:
                result.changed.add(item.device)
        if transition is Transition.OPEN:
            result.events.append(AlertEvent("alert", item.device, window, state.run_start, state.peak))
            result.changed.add(item.device)
        elif transition is Transition.CLOSE:
            result.events.append(AlertEvent("end", item.device, window, state.run_start, state.peak, "cleared"))
            result.changed.add(item.device)
            state.run_start, state.peak = None, None
