"""The parts of an evaluation report that only labelled user data has: how its files were read and fit, and
a row per file."""

from __future__ import annotations

import math
from typing import Any

from edgevae.agent.bundle import DEFAULT_PRECISION


def labelled_notes(results: dict[str, Any]) -> list[str]:
    """What the protocol fit on, how the files were read, and what chose the decision settings."""
    dataset = results["dataset"]
    cfg = results["config"]
    column = dataset["label_column"]
    share = f"the leading {cfg['fit_fraction']:.0%} of " if cfg.get("fit_fraction", 1.0) < 1.0 else ""
    if dataset["train"] is None:
        lines = [
            f"Each file's model fits {share}its rows before the first row labelled 1 in column `{column}`; every",
            "later row is tested (fit rows per file below).",
        ]
    else:
        rows = sum(dataset["fit_rows"].values())
        lines = [
            f"One model fits {share}the normal data `{dataset['train']}` ({rows} rows), and every file labelled",
            f"in column `{column}` is scored whole.",
        ]
    flags = " ".join(dataset.get("read_flags", []))
    dropped = sum(m["rows_dropped"] for m in dataset["missing"].values())
    filled = sum(m["rows_filled"] for m in dataset["missing"].values())
    read = f"Read with `{flags}`" if flags else "Read with the default reading flags"
    lines.append(f"{read}: {dropped} rows left out and {filled} forward-filled for missing cells.")
    lines += [
        "",
        "The threshold and debounce are `edgevae export`'s defaults, calibrated on each model's own normal rows;",
        "no label of these files chose a setting (the defaults were chosen on SKAB, docs/evaluation.md).",
    ]
    return lines


def per_file_table(results: dict[str, Any], protocol: str) -> list[str]:
    """One row per file (INT8 when evaluated): its rows, anomalous share and figures."""
    by_precision = results["per_file"][protocol]
    precision = DEFAULT_PRECISION.value if DEFAULT_PRECISION.value in by_precision else next(iter(by_precision))
    fit_rows = results["dataset"]["fit_rows"]
    lines = [
        f"Per file ({precision.upper()}):",
        "",
        "| file | fit rows | test rows | anomalous | F1 | FAR % | MAR % | precision | flag everything precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in by_precision[precision]:
        tp, fp, fn, tn = f["tp"], f["fp"], f["fn"], f["tn"]
        rows = tp + fp + fn + tn
        fit = fit_rows.get(f["file"], "")
        lines.append(
            f"| {f['file']} | {fit} | {rows} | {tp + fn} | {_fmt(_ratio(2 * tp, 2 * tp + fp + fn), 3)} | "
            f"{_fmt(100 * _ratio(fp, fp + tn))} | {_fmt(100 * _ratio(fn, fn + tp))} | {_fmt(_ratio(tp, tp + fp))} | "
            f"{_fmt(_ratio(tp + fn, rows))} |"
        )
    return [*lines, ""]


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"
