"""`edgevae evaluate --sweep`: the model-selection table, each variant against the default on SKAB.

Every variant adds flags to `edgevae train` or `edgevae export` and is scored on the leaderboard protocol in
FP32 with the same decision rule, so the table says what each choice is worth.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from edgevae.evaluation.evaluate import EvalConfig, evaluate

# name -> (what it changes, extra `edgevae train` flags, extra `edgevae export` flags)
VARIANTS: dict[str, tuple[str, list[str], list[str]]] = {
    "default": ("`edgevae train` and `edgevae export` defaults", [], []),
    "seed-1": ("the default with another seed (run-to-run spread)", ["--seed", "1"], []),
    "seed-2": ("the default with a third seed", ["--seed", "2"], []),
    "mlp": ("MLP encoder and decoder", ["--arch", "mlp"], []),
    "tcn": ("temporal VAE: dilated 1-D convolutions over the whole window", ["--arch", "tcn"], []),
    "gaussian-nll": ("decoder with learned variance, score = Gaussian NLL", ["--likelihood", "gaussian"], []),
    "beta-1": ("beta 1 (plain ELBO)", ["--beta", "1"], []),
    "latent-8-hidden-64": ("a larger model: latent 8, hidden 64", ["--latent", "8", "--hidden", "64"], []),
    "window-16": ("window 16", ["--window", "16"], []),
    "window-48": ("window 48", ["--window", "48"], []),
    "stride-8": ("score every 8th row (stride 8; the score then covers 24 rows)", ["--stride", "8"], []),
    "score-whole-window": ("score the whole window, not its newest rows", [], ["--score-rows", "0"]),
    "score-8-rows": ("score the newest 8 rows", [], ["--score-rows", "8"]),
    "std-floor-0.001": ("std floor 0.1 % of the mean", ["--std-floor-rel", "0.001"], []),
    "std-floor-0.02": ("std floor 2 % of the mean", ["--std-floor-rel", "0.02"], []),
    "train-90": ("train on 90 % of the fit rows, validate on 10 %", ["--splits", "0.9", "0.1", "0"], []),
    "epochs-60": ("train up to 60 epochs", ["--epochs", "60"], []),
    "no-debounce": (
        "no debounce (alert on every window above threshold)",
        [],
        ["--debounce-trigger", "1", "--debounce-clear", "1"],
    ),
    "clear-5": ("debounce: 5 normal windows in a row end an alert", [], ["--debounce-clear", "5"]),
    "clear-40": ("debounce: 40 normal windows in a row end an alert", [], ["--debounce-clear", "40"]),
    "margin-1.75": ("threshold margin 1.75", [], ["--threshold-margin", "1.75"]),
    "margin-1.95": ("threshold margin 1.95", [], ["--threshold-margin", "1.95"]),
    "quantile-2x": (
        "threshold 2 x the 0.99 quantile of the hold-out windows' scores",
        [],
        ["--threshold-method", "quantile", "--threshold-q", "0.99", "--threshold-margin", "2"],
    ),
}


def _run(name: str, cfg: EvalConfig) -> tuple[str, dict[str, Any]]:
    document = evaluate(cfg)
    return name, document["results"]["leaderboard"]["fp32"]


def sweep(base: EvalConfig, workers: int = 2) -> dict[str, dict[str, Any]]:
    """Run every variant on the leaderboard protocol in FP32; results by variant name."""
    configs = {
        name: replace(
            base,
            protocols=("leaderboard",),
            precisions=("fp32",),
            plots=False,
            threads=1,
            train_flags=(*base.train_flags, *train_flags),
            export_flags=(*base.export_flags, *export_flags),
        )
        for name, (_, train_flags, export_flags) in VARIANTS.items()
    }
    # Each variant trains 34 small models on one thread; variants run side by side on separate cores.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(_run, configs, configs.values())
        return dict(done)


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def write_sweep(results: dict[str, dict[str, Any]], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model-selection.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    base = results["default"]
    lines = [
        "# Model selection on SKAB",
        "",
        "Each row changes one thing of the default and is scored on the SKAB leaderboard protocol (34 files, fit",
        "on each file's first 400 rows, test on the rest) in FP32, through the exported bundle and the agent's",
        "runtime code, with the same decision rule. Deltas are against the default row. Regenerate with",
        "`edgevae evaluate --data ../shared/data/SKAB/data --out docs/skab --sweep`.",
        "",
        "| variant | what changes | F1 | FAR % | MAR % | AUROC | ΔF1 | ΔFAR | ΔMAR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (what, _, _) in VARIANTS.items():
        s = results[name]
        lines.append(
            f"| {name} | {what} | {_fmt(s['f1'], 3)} | {_fmt(s['far'])} | {_fmt(s['mar'])} | {_fmt(s['auroc'], 3)} | "
            f"{s['f1'] - base['f1']:+.3f} | {s['far'] - base['far']:+.2f} | {s['mar'] - base['mar']:+.2f} |"
        )
    path = out / "model-selection.md"
    path.write_text("\n".join(lines) + "\n")
    return path
