"""`edgevae score`: a sensor table scored by the live agent's Detector, one output row per input row."""

from __future__ import annotations

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
from edgevae.agent.drift_tally import DriftTally
from edgevae.agent.offline_stream import ScoredRows, StreamScorer
from edgevae.agent.offline_write import ScoreWriter, header, open_scores
from edgevae.agent.table import DEFAULT_READ, Table, TableError
from edgevae.agent.table_options import ReadOptions
from edgevae.agent.table_stream import CHUNK_ROWS, TableStream
from edgevae.core.decision import Debounce

logger = logging.getLogger(__name__)

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
    return _columns(table.path, table.channels, channels)


def stream_columns(stream: TableStream, channels: tuple[str, ...]) -> list[int]:
    return _columns(str(stream.path), stream.channels, channels)


def _columns(path: str, have: tuple[str, ...], channels: tuple[str, ...]) -> list[int]:
    missing = [c for c in channels if c not in have]
    if missing:
        msg = f"{path}: no column for the bundle's channels {missing}; the table has {list(have)}"
        raise TableError(msg)
    return [have.index(c) for c in channels]


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
    backend = create_backend(bundle.model_path, backend_key, backend_options)
    try:
        scorer = StreamScorer(manifest, backend, debounce, max_batch, max_gap_periods)
        blocks = [scorer.score(table.timestamps, values, None, None), scorer.finish()]
    finally:
        backend.close()
    rows: list[ScoreRow] = []
    threshold = manifest.threshold.value
    for block in blocks:
        scores, alerts = block.scores.tolist(), block.alert_open.tolist()
        ends = block.window_end.tolist()
        for i, (ts, w) in enumerate(zip(block.timestamps.tolist(), block.window.tolist(), strict=True)):
            if w < 0:
                rows.append(ScoreRow(ts, None, threshold, False, None))
            else:
                rows.append(ScoreRow(ts, scores[w], threshold, alerts[w], block.channel_error[w], ends[i]))
    if dropped is not None:
        dropped.update(scorer.dropped)
    if scorer.dropped:
        logger.warning("%s: rows the agent would drop were not scored: %s", table.path, dict(scorer.dropped))
    return rows


def score_csv(
    bundle_path: str | Path,
    input_csv: str | Path,
    out_csv: str | Path,
    backend_key: str = "onnxruntime-cpu",
    read: ReadOptions = DEFAULT_READ,
    chunk_rows: int = CHUNK_ROWS,
) -> ScoreSummary:
    """Score a CSV file of any length in bounded memory: read, scored and written `chunk_rows` rows at a time.

    The scores file appears only once complete: it is written beside `out_csv` and renamed over it.
    """
    with closing(load_bundle(bundle_path)) as bundle:
        stream = TableStream(input_csv, read, chunk_rows)
        try:
            return _score_stream(bundle, stream, Path(out_csv), backend_key)
        finally:
            stream.close()


def _score_stream(bundle: Bundle, stream: TableStream, out: Path, backend_key: str) -> ScoreSummary:
    manifest = bundle.manifest
    columns = stream_columns(stream, manifest.channels)
    tally = DriftTally.from_manifest(manifest)
    counts = _Counts()
    label_column = (stream.label_column or "label") if stream.columns.label is not None else None
    names = header(
        manifest.channels, stream.timestamp_column if stream.columns.timestamp is not None else None, label_column
    )
    partial = out.with_name(out.name + ".part")
    backend = create_backend(bundle.model_path, backend_key)
    scorer = StreamScorer(manifest, backend, None, _DEFAULTS.max_batch, _DEFAULTS.max_gap_periods)
    try:
        with open_scores(partial) as fh:
            writer = ScoreWriter(fh, names, manifest.threshold.value, len(manifest.channels))
            for chunk in stream:
                values = chunk.values[:, columns]
                if tally is not None:
                    tally.add_values(values)
                block = scorer.score(chunk.timestamps, values, chunk.labels, chunk.timestamp_text)
                counts.add(block, tally)
                writer.write(block)
            block = scorer.finish()
            counts.add(block, tally)
            writer.write(block)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        backend.close()
    if scorer.dropped:
        logger.warning("%s: rows the agent would drop were not scored: %s", stream.path, dict(scorer.dropped))
    return ScoreSummary(
        rows=counts.rows,
        windows=counts.windows,
        alerts=counts.alerts,
        anomalous_rows=counts.anomalous_rows,
        model=f"{manifest.model_id} {manifest.model_version}",
        dropped=dict(scorer.dropped),
        out=str(out),
        missing_dropped=stream.rows_dropped,
        missing_filled=stream.rows_filled,
        drift=tuple(tally.warnings()) if tally is not None else (),
    )


@dataclass
class _Counts:
    """The summary's counts, over the blocks of scored rows in order."""

    rows: int = 0
    windows: int = 0
    alerts: int = 0
    anomalous_rows: int = 0
    open: bool = False  # the decision on the last row counted

    def add(self, block: ScoredRows, tally: DriftTally | None) -> None:
        flags = np.zeros(block.rows, dtype=bool)
        if len(block.alert_open):
            flags = np.where(block.window >= 0, block.alert_open[np.maximum(block.window, 0)], False)
        self.rows += block.rows
        self.windows += int(np.count_nonzero(block.window_end))
        self.anomalous_rows += int(np.count_nonzero(flags))
        # An alert is a row whose decision is on where the row before's was off.
        self.alerts += int(np.count_nonzero(np.diff(flags.astype(np.int8), prepend=np.int8(self.open)) == 1))
        if block.rows:
            self.open = bool(flags[-1])
        if tally is not None:
            tally.add_scores(block.scores[block.window[block.window_end]])
