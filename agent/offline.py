"""`edgevae score`: a sensor table scored by the live agent's Detector, one output row per input row."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.backends import create_backend
from edgevae.agent.bundle import Bundle, load_bundle
from edgevae.agent.config import DetectionConfig
from edgevae.agent.detector import Detector, StepResult, WindowResult
from edgevae.agent.drift import drift_warnings
from edgevae.agent.readings import OrderGuard
from edgevae.agent.table import DEFAULT_READ, Table, TableError, read_table
from edgevae.agent.table_options import ReadOptions
from edgevae.core.decision import Debounce

logger = logging.getLogger(__name__)

DEVICE = "offline"
_DEFAULTS = DetectionConfig()


@dataclass(frozen=True)
class ScoreRow:
    """Rows before the first full window have no score; later rows carry the latest window's values."""

    timestamp: float
    score: float | None
    threshold: float
    is_anomaly: bool  # the debounced decision: True while an alert is open
    channel_error: np.ndarray | None  # (channels,)
    window_end: bool = False  # a window ended on this row (else the values are carried from an earlier row)


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    windows: int
    alerts: int
    anomalous_rows: int
    model: str
    dropped: dict[str, int] = field(default_factory=dict)
    out: str = ""
    # Input rows the reader left out or forward-filled for a missing cell (--missing drop / ffill).
    missing_dropped: int = 0
    missing_filled: int = 0
    # What in the input differs from the model's training data (edgevae.agent.drift.drift_warnings).
    drift: tuple[str, ...] = ()

    def __str__(self) -> str:
        dropped = f", dropped {self.dropped}" if self.dropped else ""
        missing = [f"{self.missing_dropped} left out"] if self.missing_dropped else []
        missing += [f"{self.missing_filled} forward-filled"] if self.missing_filled else []
        read = f" ({' and '.join(missing)} for missing cells)" if missing else ""
        wrote = f"; wrote {self.out}" if self.out else ""
        warnings = "".join(f"\nwarning: {line}" for line in self.drift)
        return (
            f"{self.model}: {self.rows} rows{read}, {self.windows} windows, {self.alerts} alerts, "
            f"{self.anomalous_rows} rows in an alert{dropped}{wrote}{warnings}"
        )


def channel_columns(table: Table, channels: tuple[str, ...]) -> list[int]:
    """Column of each bundle channel in the table, matched by name."""
    missing = [c for c in channels if c not in table.channels]
    if missing:
        msg = f"{table.path}: no column for the bundle's channels {missing}; the table has {list(table.channels)}"
        raise TableError(msg)
    return [table.channels.index(c) for c in channels]


def score_table(
    bundle: Bundle | str | Path,
    table: Table,
    backend_key: str = "onnxruntime-cpu",
    backend_options: dict[str, Any] | None = None,
    debounce: Debounce | None = None,
    max_batch: int = _DEFAULTS.max_batch,
    max_gap_periods: float = _DEFAULTS.max_gap_periods,
    dropped: Counter[str] | None = None,
) -> list[ScoreRow]:
    """Feed the table's rows, as one device, through the same Detector the agent runs.

    Rows the agent would drop (repeated or backwards timestamps) are not scored and are counted in `dropped`.
    """
    if not isinstance(bundle, Bundle):
        with closing(load_bundle(bundle)) as opened:
            return score_table(
                opened, table, backend_key, backend_options, debounce, max_batch, max_gap_periods, dropped
            )
    manifest = bundle.manifest
    values = table.values[:, channel_columns(table, manifest.channels)]
    dropped = Counter() if dropped is None else dropped
    backend = create_backend(bundle.model_path, backend_key, backend_options)
    results: dict[int, WindowResult] = {}
    try:
        detector = Detector(manifest, backend, debounce, max_batch, max_gap_periods)
        guard = OrderGuard(max_devices=1)
        fed_rows: list[int] = []  # input row of each reading the detector took, by its index - 1

        def collect(step: StepResult) -> None:
            for window in step.windows:
                results[fed_rows[window.index - 1]] = window

        for row, ts in enumerate(table.timestamps.tolist()):
            reason = guard.check(DEVICE, ts)
            if reason is not None:
                dropped[reason.value] += 1
                continue
            fed_rows.append(row)
            detector.push(DEVICE, ts, values[row])
            if detector.pending >= max_batch:
                collect(detector.step())
        collect(detector.step())
    finally:
        backend.close()
    rows: list[ScoreRow] = []
    latest: WindowResult | None = None
    threshold = manifest.threshold.value
    for row, ts in enumerate(table.timestamps.tolist()):
        ended = row in results
        latest = results[row] if ended else latest
        if latest is None:
            rows.append(ScoreRow(ts, None, threshold, False, None))
        else:
            rows.append(ScoreRow(ts, latest.score, threshold, latest.alert_open, latest.channel_error, ended))
    if dropped:
        logger.warning("%s: rows the agent would drop were not scored: %s", table.path, dict(dropped))
    return rows


def write_scores(
    rows: list[ScoreRow], channels: tuple[str, ...], path: str | Path, source: Table | None = None
) -> None:
    """One line per input row: the input's own timestamp and label columns as it wrote them (when `source`,
    the table scored, has them), then `timestamp` in epoch seconds, the score and decision, each channel's error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ours = ["timestamp", "score", "threshold", "is_anomaly", *(f"error_{c}" for c in channels)]
    kept: list[tuple[str, list[str]]] = []
    if source is not None and source.timestamp_text is not None and len(source.timestamp_text) == len(rows):
        kept.append((source.timestamp_column, source.timestamp_text.tolist()))
    if source is not None and source.labels is not None and len(source.labels) == len(rows):
        kept.append((source.label_column or "label", [str(v) for v in source.labels.tolist()]))
    # An input column named like one of ours keeps its values under input_<name>.
    names = [f"input_{name}" if name in ours else name for name, _ in kept]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, *ours])
        empty = [""] * len(channels)
        for i, r in enumerate(rows):
            score = "" if r.score is None else format(r.score, ".9g")
            errors = empty if r.channel_error is None else [format(e, ".9g") for e in r.channel_error.tolist()]
            front = [values[i] for _, values in kept]
            writer.writerow([*front, repr(r.timestamp), score, format(r.threshold, ".9g"), int(r.is_anomaly), *errors])


def score_csv(
    bundle_path: str | Path,
    input_csv: str | Path,
    out_csv: str | Path,
    backend_key: str = "onnxruntime-cpu",
    read: ReadOptions = DEFAULT_READ,
) -> ScoreSummary:
    with closing(load_bundle(bundle_path)) as bundle:
        return _score_csv(bundle, input_csv, out_csv, backend_key, read)


def _score_csv(
    bundle: Bundle, input_csv: str | Path, out_csv: str | Path, backend_key: str, read: ReadOptions
) -> ScoreSummary:
    table = read_table(input_csv, read)
    dropped: Counter[str] = Counter()
    rows = score_table(bundle, table, backend_key, dropped=dropped)
    write_scores(rows, bundle.manifest.channels, out_csv, table)
    flags = np.array([r.is_anomaly for r in rows], dtype=bool)
    manifest = bundle.manifest
    scores = [r.score for r in rows if r.window_end and r.score is not None]
    drift = drift_warnings(manifest, table.values[:, channel_columns(table, manifest.channels)], scores)
    return ScoreSummary(
        rows=len(rows),
        windows=sum(r.window_end for r in rows),
        alerts=int(np.count_nonzero(np.diff(flags.astype(np.int8), prepend=0) == 1)),
        anomalous_rows=int(flags.sum()),
        model=f"{bundle.manifest.model_id} {bundle.manifest.model_version}",
        dropped=dict(dropped),
        out=str(out_csv),
        missing_dropped=table.rows_dropped,
        missing_filled=table.rows_filled,
        drift=tuple(drift),
    )
