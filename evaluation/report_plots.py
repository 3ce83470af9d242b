"""The evaluation's PNG plots: precision-recall per protocol, and a few files' scores over time.

Every plot shows the detector beside the flag-everything baseline: on the precision-recall plot the
baseline's precision (the share of anomalous rows) is a line, and the threshold's operating points are
marked, before and after the debounce; each file's score plot names both precisions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.agent.bundle import DEFAULT_PRECISION
from edgevae.core import metrics

PLOTTED_FILES = 4


def write_plots(per_file: dict[str, dict[str, list[Any]]], out: Path) -> list[Path]:
    """pr-<protocol>.png and scores-<protocol>.png for each protocol of `per_file` (FileResults by precision)."""
    import matplotlib

    matplotlib.use("Agg")
    images: list[Path] = []
    for protocol, by_precision in per_file.items():
        images.append(_precision_recall(protocol, by_precision, out / f"pr-{protocol}.png"))
        images.append(_scores(protocol, by_precision, out / f"scores-{protocol}.png"))
    return images


def pooled(results: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and score / threshold over every file's test rows; rows before the first window rank lowest."""
    labels = np.concatenate([r.labels for r in results])
    ratio = np.concatenate([r.ratio for r in results])
    return labels, np.where(np.isnan(ratio), np.nanmin(ratio), ratio)


def _precision_recall(protocol: str, by_precision: dict[str, list[Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    share = math.nan
    for precision, results in by_precision.items():
        labels, ratio = pooled(results)
        share = float(labels.mean())
        curve = metrics.precision_recall_curve(labels, ratio)
        auprc = metrics.auprc(labels, ratio)
        (line,) = ax.plot(curve.recall, curve.precision, label=f"{precision.upper()} (AUPRC {auprc:.3f})")
        # Where the threshold puts each row (score above it), and what the debounced alerts made of that.
        raw = metrics.confusion(labels, ratio > 1.0)
        decided = sum((r.confusion for r in results), metrics.Confusion())
        ax.plot(metrics.recall(raw), metrics.precision(raw), "x", color=line.get_color(), ms=8,
                label=f"{precision.upper()} score > threshold")  # fmt: skip
        ax.plot(metrics.recall(decided), metrics.precision(decided), "o", color=line.get_color(), ms=7,
                label=f"{precision.upper()} alerts: precision {metrics.precision(decided):.2f}, "
                f"recall {metrics.recall(decided):.2f}")  # fmt: skip
    ax.axhline(share, color="grey", ls="--", lw=1, label=f"flag everything: precision {share:.2f}")
    ax.set(
        xlabel="recall (share of anomalous rows flagged)",
        ylabel="precision (share of flagged rows anomalous)",
        title=f"{protocol}: precision-recall, point-wise",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def _scores(protocol: str, by_precision: dict[str, list[Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    precision = DEFAULT_PRECISION.value if DEFAULT_PRECISION.value in by_precision else next(iter(by_precision))
    shown = _spread(by_precision[precision], PLOTTED_FILES)
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 2.4 * len(shown)), sharex=False, squeeze=False)
    for ax, r in zip(axes[:, 0], shown, strict=True):
        t = (r.timestamps - r.timestamps[0]) / 60.0
        ax.fill_between(t, 0, 1, where=r.labels > 0, transform=ax.get_xaxis_transform(), color="tab:red",
                        alpha=0.15, label="labelled anomaly")  # fmt: skip
        ax.plot(t, r.ratio, lw=0.8, label="score / threshold")
        ax.axhline(1.0, color="k", ls="--", lw=0.8, label="threshold")
        ax.fill_between(t, 0, 0.08, where=r.predictions > 0, transform=ax.get_xaxis_transform(),
                        color="tab:orange", alpha=0.8, label="alert")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("minutes into the test rows", fontsize=8)
        ax.set_ylabel("score / threshold", fontsize=8)
        flagged = metrics.precision(r.confusion)
        share = float(r.labels.mean()) if r.labels.size else math.nan
        ax.set_title(f"{r.name}: alert precision {flagged:.2f}, flag everything {share:.2f}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{protocol}: scores over time ({precision.upper()})", fontsize=10)
    return _save(fig, path)


def _spread(items: list[Any], count: int) -> list[Any]:
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
