"""The scoring loop of `edgevae score`: a table's chunks through the live agent's Detector, as one device.

Each input row comes out with the latest window that ended on or before it. The windows are scored in the
batches the agent would score them in, one reading at a time: `max_batch` windows each, the rest at the end.
An INT8 model quantizes each batch with its own scale, so the batches, not only the windows, must match for
the scores to. The loop therefore knows, before pushing a block of readings, which readings complete a
window (the rule of core.window.OnlineWindow, with the Detector's resets on a gap or a clock that steps
back), pushes exactly up to the reading that fills a batch, and checks the Detector agreed.

A row is handed on once its window has been scored; rows after a window still waiting for its batch wait
with it, at most HOLD_ROWS of them, after which the waiting windows are scored as a smaller batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from edgevae.agent.backends.base import Backend
from edgevae.agent.bundle import Manifest
from edgevae.agent.detector import Detector, StepResult
from edgevae.agent.readings import OrderGuard
from edgevae.core.decision import Debounce

DEVICE = "offline"
# Far beyond max_batch windows at any practical stride (256 x 64 = 16,384 rows); reached only when windows stop
# forming (readings refused or apart by more than the gap limit) while some wait for their batch.
HOLD_ROWS = 65_536


@dataclass(frozen=True)
class ScoredRows:
    """Consecutive input rows and their windows: row i carries window `window[i]` (-1: no window has ended yet)."""

    timestamps: np.ndarray  # (rows,) float64
    timestamp_text: list[str] | None  # as the input wrote them
    labels: np.ndarray | None  # (rows,) int8
    window: np.ndarray  # (rows,) int64 index into the arrays below
    window_end: np.ndarray  # (rows,) bool: a window ended on this row
    scores: np.ndarray  # (windows,) float64
    alert_open: np.ndarray  # (windows,) bool: the debounced decision after the window
    channel_error: np.ndarray  # (windows, channels) float32

    @property
    def rows(self) -> int:
        return len(self.timestamps)


@dataclass
class _Rows:
    """Rows waiting for their window to be scored, with the global ordinal of that window."""

    timestamps: np.ndarray
    timestamp_text: list[str] | None
    labels: np.ndarray | None
    window: np.ndarray
    window_end: np.ndarray

    def join(self, other: _Rows) -> _Rows:
        if not len(self.timestamps):
            return other
        mine, theirs = self.timestamp_text, other.timestamp_text
        return _Rows(
            np.concatenate([self.timestamps, other.timestamps]),
            None if mine is None or theirs is None else mine + theirs,
            None if self.labels is None or other.labels is None else np.concatenate([self.labels, other.labels]),
            np.concatenate([self.window, other.window]),
            np.concatenate([self.window_end, other.window_end]),
        )

    def split(self, at: int) -> tuple[_Rows, _Rows]:
        if at == len(self.timestamps):
            return self, _Rows(
                self.timestamps[at:],
                None if self.timestamp_text is None else [],
                None if self.labels is None else self.labels[at:],
                self.window[at:],
                self.window_end[at:],
            )
        text, labels = self.timestamp_text, self.labels
        head, tail = slice(None, at), slice(at, None)
        return (
            _Rows(self.timestamps[head], None if text is None else text[head], None if labels is None else labels[head],
                  self.window[head], self.window_end[head]),
            _Rows(self.timestamps[tail], None if text is None else text[tail], None if labels is None else labels[tail],
                  self.window[tail], self.window_end[tail]),
        )  # fmt: skip


class StreamScorer:
    """`score` each chunk's rows in order, then `finish`; each call returns the rows whose windows are scored."""

    def __init__(
        self, manifest: Manifest, backend: Backend, debounce: Debounce | None, max_batch: int, max_gap_periods: float
    ) -> None:
        self.detector = Detector(manifest, backend, debounce, max_batch, max_gap_periods)
        self.guard = OrderGuard(max_devices=1)
        self.dropped: Counter[str] = Counter()
        self.window, self.stride = manifest.window, manifest.stride
        self.channels = len(manifest.channels)
        # The detector's window as it will be after the readings pushed so far.
        self._count = 0  # readings since its last reset
        self._last_ts: float | None = None
        self._due = 0  # windows completed so far; the next one gets this ordinal
        self._scored = 0  # windows scored so far
        self._rows = 0  # input rows seen so far
        self._pending_rows: list[int] = []  # the input row of each window completed but not scored
        self._latest = -1  # ordinal of the latest window at the last row seen
        # Scored windows from ordinal `_base` on, kept while a row still to be handed on may carry them.
        self._base = 0
        self._scores = np.empty(0, dtype=np.float64)
        self._alerts = np.empty(0, dtype=bool)
        self._errors = np.empty((0, self.channels), dtype=np.float32)
        self._held: _Rows | None = None

    def score(
        self, timestamps: np.ndarray, values: np.ndarray, labels: np.ndarray | None, text: list[str] | None
    ) -> ScoredRows:
        """Rows (`values` in the manifest's channel order) after those of the previous calls."""
        rows = len(timestamps)
        accepted = np.ones(rows, dtype=bool)
        for i, reason in self.guard.check_block(DEVICE, timestamps) if rows else []:
            accepted[i] = False
            self.dropped[reason.value] += 1
        fed = np.flatnonzero(accepted)
        ts, readings = timestamps[fed], values[fed]
        due = self._completes(ts)
        ends = fed[due]  # rows that complete a window, in order
        first_row = self._rows
        self._rows += rows
        row_window = np.full(rows, -1, dtype=np.int64)
        row_window[ends] = np.arange(self._due, self._due + len(ends))
        window_end = row_window >= 0
        row_window = np.maximum.accumulate(np.concatenate([[self._latest], row_window]))[1:]
        if rows:
            self._latest = int(row_window[-1])
        self._push(ts, readings, due, first_row + ends, first_row + fed, self._rows - 1)
        new = _Rows(timestamps, text, labels, row_window, window_end)
        self._held = new if self._held is None else self._held.join(new)
        return self._hand_on()

    def finish(self) -> ScoredRows:
        """Score the windows still waiting for a full batch; the rows left."""
        if self.detector.pending:
            self._step()
        return self._hand_on()

    def _completes(self, ts: np.ndarray) -> np.ndarray:
        """Which of these readings, pushed next, complete a window (and the window's state after them)."""
        if not len(ts):
            return np.zeros(0, dtype=bool)
        step = np.diff(ts, prepend=ts[0] if self._last_ts is None else self._last_ts)
        gap = self.detector.max_gap_s
        reset = step < 0
        if gap > 0:
            reset |= step > gap
        if self._last_ts is None:
            reset[0] = False
        # Readings since the last reset, counting this one: from the reset, or on from the count so far.
        position = np.arange(len(ts))
        since = np.maximum.accumulate(np.where(reset, position, -1))
        count = np.where(since >= 0, position - since + 1, self._count + position + 1)
        self._count, self._last_ts = int(count[-1]), float(ts[-1])
        completes: np.ndarray = (count >= self.window) & ((count - self.window) % self.stride == 0)
        return completes

    def _push(
        self, ts: np.ndarray, values: np.ndarray, due: np.ndarray, end_rows: np.ndarray, rows: np.ndarray, last_row: int
    ) -> None:
        """Push the readings (input rows `rows`, up to `last_row`), stepping the detector where the agent's
        would have, at each full batch, and once the input is HOLD_ROWS rows past the first waiting window."""
        completing = np.flatnonzero(due)  # reading positions that complete a window
        start = 0  # readings pushed
        first_new = self._due
        self._pending_rows.extend(end_rows.tolist())
        self._due += len(completing)
        while start < len(ts):
            fill = self._scored + self.detector.max_batch - 1 - first_new  # among `completing`, the one to fill
            cut = int(completing[fill]) if 0 <= fill < len(completing) else None
            if self._pending_rows and self._pending_rows[0] + HOLD_ROWS <= last_row:
                # After every reading up to that row, before any after it, whatever the chunks.
                hold = int(np.searchsorted(rows, self._pending_rows[0] + HOLD_ROWS, side="right")) - 1
                if cut is None or hold < cut:
                    cut = max(hold, start - 1)
            stop = len(ts) if cut is None else cut + 1
            if stop > start:
                made = self.detector.push_block(DEVICE, ts[start:stop], values[start:stop])
                expected = int(np.count_nonzero(due[start:stop]))
                if made != expected:
                    msg = f"expected {expected} windows of {stop - start} readings, the detector made {made}"
                    raise RuntimeError(msg)
            start = stop
            if cut is None:
                break
            self._step()

    def _step(self) -> None:
        result: StepResult = self.detector.step()
        windows = result.windows
        self._scored += len(windows)
        del self._pending_rows[: len(windows)]
        self._scores = np.concatenate([self._scores, np.array([w.score for w in windows], dtype=np.float64)])
        self._alerts = np.concatenate([self._alerts, np.array([w.alert_open for w in windows], dtype=bool)])
        errors = np.array([w.channel_error for w in windows], dtype=np.float32).reshape(len(windows), self.channels)
        self._errors = np.concatenate([self._errors, errors])

    def _hand_on(self) -> ScoredRows:
        """The held rows whose windows are scored, with those windows."""
        held = self._held
        assert held is not None or self._rows == 0
        if held is None:
            held = _Rows(np.empty(0), None, None, np.empty(0, dtype=np.int64), np.empty(0, dtype=bool))
        # Ordinals never decrease down the rows, so the rows ready are a prefix.
        ready, self._held = held.split(int(np.searchsorted(held.window, self._scored, side="left")))
        first = int(ready.window[0]) if len(ready.window) and ready.window[0] >= 0 else self._base
        last = int(ready.window[-1]) + 1 if len(ready.window) else first
        local = np.where(ready.window >= 0, ready.window - first, -1)
        out = ScoredRows(
            ready.timestamps, ready.timestamp_text, ready.labels, local, ready.window_end,
            self._scores[first - self._base : last - self._base], self._alerts[first - self._base : last - self._base],
            self._errors[first - self._base : last - self._base],
        )  # fmt: skip
        # Rows still to come carry the latest window at the earliest: drop the ones before it.
        keep_from = min(int(self._held.window[0]) if len(self._held.window) else self._latest, self._scored)
        if keep_from > self._base:
            cut = keep_from - self._base
            self._scores, self._alerts, self._errors = self._scores[cut:], self._alerts[cut:], self._errors[cut:]
            self._base = keep_from
        return out
