"""The retraining gate: the candidate bundle and the field's scored on the same labelled tables, then compared.

Each table is scored whole through the agent's own Detector (`edgevae.agent.offline.score_table`), the
debounced decisions against the table's `anomaly` labels; TP/FP/FN/TN are summed over all tables before
any ratio is taken, as SKAB's protocol does (`edgevae.evaluation.evaluate.summarize`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.offline import score_table
from edgevae.agent.table import Table
from edgevae.core import metrics
from edgevae.core.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    compute: Callable[[metrics.Confusion], float]
    higher_is_better: bool
    unit: str  # how a figure is written: F1 as a share, FAR and MAR in percent

    def show(self, value: float) -> str:
        return f"{value:.2f} %" if self.unit == "%" else f"{value:.3f}"


# SKAB's leaderboard figures; with both classes among the labels none of them is undefined.
METRICS: dict[str, Metric] = {
    "f1": Metric(metrics.f1, higher_is_better=True, unit=""),
    "far": Metric(metrics.far, higher_is_better=False, unit="%"),
    "mar": Metric(metrics.mar, higher_is_better=False, unit="%"),
}
NO_FIELD_MODEL = "no model in the field yet"


def check_labelled(tables: Sequence[Table]) -> None:
    """Every table has labels, and both classes occur among them: else no metric compares two models."""
    unlabelled = [t.path for t in tables if t.labels is None]
    if unlabelled:
        msg = f"{', '.join(unlabelled)}: no `anomaly` column; the gate scores models against labelled rows"
        raise DataError(msg, remedy="label the evaluation CSVs with an `anomaly` column of 0/1, as SKAB's files")
    labels = np.concatenate([t.labels for t in tables if t.labels is not None])
    if labels.all() or not labels.any():
        kind = "anomalous" if labels.all() else "normal"
        msg = f"every evaluation row is labelled {kind}; the gate needs both normal and anomalous rows"
        raise DataError(msg, remedy="add evaluation CSVs that hold both normal operation and known anomalies")


def score_bundle(bundle: str | Path, tables: Sequence[Table]) -> metrics.Confusion:
    """The bundle's debounced decisions on every table, counted against the labels and summed."""
    total = metrics.Confusion()
    for table in tables:
        rows = score_table(bundle, table)
        predictions = np.array([r.is_anomaly for r in rows], dtype=np.int8)
        labels = table.labels if table.labels is not None else np.zeros(table.rows, dtype=np.int8)
        total += metrics.confusion(labels, predictions)
    return total


def figures(confusion: metrics.Confusion) -> dict[str, Any]:
    """What report.json says of one model: the counts and every gate metric."""
    counts = {"tp": confusion.tp, "fp": confusion.fp, "fn": confusion.fn, "tn": confusion.tn}
    return counts | {name: metric.compute(confusion) for name, metric in METRICS.items()}


@dataclass(frozen=True)
class Decision:
    passed: bool
    reason: str
    metric: str
    candidate: float
    field: float | None  # None: no model in the field yet


def decide(metric: str, tolerance: float, candidate: metrics.Confusion, field: metrics.Confusion | None) -> Decision:
    """Refuse a candidate worse than the field model by more than `tolerance`, in the metric's own units.

    >>> print(decide("f1", 0.01, metrics.Confusion(tp=6, fn=4, tn=90), metrics.Confusion(tp=8, fn=2, tn=90)).reason)
    candidate f1 0.750 is 0.139 worse than the field model's 0.889 (tolerance 0.010)
    """
    rule = METRICS[metric]
    ours = rule.compute(candidate)
    if field is None:
        return Decision(True, NO_FIELD_MODEL, metric, ours, None)
    theirs = rule.compute(field)
    worse_by = theirs - ours if rule.higher_is_better else ours - theirs
    passed = worse_by <= tolerance
    if worse_by <= 0:
        how = f"is no worse than the field model's {rule.show(theirs)}"
    else:
        how = f"is {rule.show(worse_by)} worse than the field model's {rule.show(theirs)}"
    reason = f"candidate {metric} {rule.show(ours)} {how} (tolerance {rule.show(tolerance)})"
    return Decision(passed, reason, metric, ours, theirs)
