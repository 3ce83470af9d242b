"""`edgevae evaluate --sweep`: the model-selection table, each variant against the default on SKAB.

Every variant changes one thing of the default `EvalConfig` and is scored on the leaderboard protocol in
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

# name -> (what it changes, EvalConfig overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the shipped defaults", {}),
    "seed-1": ("the default with another seed (run-to-run spread)", {"seed": 1}),
    "seed-2": ("the default with a third seed", {"seed": 2}),
    "seed-3": ("the default with a fourth seed", {"seed": 3}),
    "seed-4": ("the default with a fifth seed", {"seed": 4}),
    "mlp": ("MLP encoder and decoder", {"arch": "mlp"}),
    "tcn": ("temporal VAE: dilated 1-D convolutions over the whole window", {"arch": "tcn"}),
    "gaussian-nll": ("decoder with learned variance, score = Gaussian NLL", {"likelihood": "gaussian"}),
    "beta-1": ("beta 1 (plain ELBO)", {"beta": 1.0}),
    "beta-0.2": ("beta 0.2", {"beta": 0.2}),
    "no-kl-warmup": ("no KL warm-up", {"kl_warmup_epochs": 0}),
    "latent-8-hidden-64": ("a larger model: latent 8, hidden 64", {"latent": 8, "hidden": 64}),
    "window-16": ("window 16", {"window": 16}),
    "window-48": ("window 48", {"window": 48}),
    "score-whole-window": ("score the whole window, not its newest rows", {"score_rows": 0}),
    "score-16-rows": ("score the newest 16 rows", {"score_rows": 16}),
    "std-floor-0.001": ("std floor 0.1 % of the mean (thermal channels dominate)", {"std_floor_rel": 1e-3}),
    "std-floor-0.0125": ("std floor 1.25 % of the mean", {"std_floor_rel": 0.0125}),
    "std-floor-0.02": ("std floor 2 % of the mean", {"std_floor_rel": 0.02}),
    "train-90": ("train on the first 90 % of the fit rows, validate on the last 10 %", {"splits": (0.9, 0.1, 0.0)}),
    "epochs-60": ("train up to 60 epochs", {"epochs": 60}),
    "epochs-60-batch-64": ("train to convergence: up to 60 epochs of batch 64", {"epochs": 60, "batch_size": 64}),
    "no-debounce": ("no debounce (alert on every window above threshold)", {"trigger": 1, "clear": 1}),
    "clear-40": ("debounce: 40 normal windows in a row end an alert", {"clear": 40}),
    "margin-1.75": ("threshold margin 1.75", {"threshold_params": {"q": 0.99, "ratio_q": 0.95, "margin": 1.75}}),
    "margin-1.95": ("threshold margin 1.95", {"threshold_params": {"q": 0.99, "ratio_q": 0.95, "margin": 1.95}}),
    "ratio-q-0.9": (
        "hold-out and training scores compared at their 0.9 quantile",
        {"threshold_params": {"q": 0.99, "ratio_q": 0.9, "margin": 1.85}},
    ),
    "quantile-2x": (
        "threshold 2 x the 0.99 quantile of every fit window's score, not scaled by the hold-out",
        {"threshold_method": "quantile", "threshold_params": {"q": 0.99, "margin": 2.0}},
    ),
    "quantile-1.8x": (
        "threshold 1.8 x the 0.99 quantile of every fit window's score",
        {"threshold_method": "quantile", "threshold_params": {"q": 0.99, "margin": 1.8}},
    ),
    "quantile-0.999x1.33": (
        "threshold 4/3 of the 0.999 quantile of every fit window's score (SKAB's Conv-AE rule)",
        {"threshold_method": "quantile", "threshold_params": {"q": 0.999, "margin": 4 / 3}},
    ),
    "pot": (
        "peaks-over-threshold, risk 1e-3 over the 90th percentile",
        {"threshold_method": "pot", "threshold_params": {"risk": 1e-3, "init_quantile": 0.9}},
    ),
}


def _run(name: str, cfg: EvalConfig) -> tuple[str, dict[str, Any]]:
    document = evaluate(cfg)
    return name, document["results"]["leaderboard"]["fp32"]


def sweep(base: EvalConfig, workers: int = 2) -> dict[str, dict[str, Any]]:
    """Run every variant on the leaderboard protocol in FP32; results by variant name."""
    configs = {
        name: replace(base, protocols=("leaderboard",), precisions=("fp32",), plots=False, threads=1, **overrides)
        for name, (_, overrides) in VARIANTS.items()
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
    for name, (what, _) in VARIANTS.items():
        s = results[name]
        lines.append(
            f"| {name} | {what} | {_fmt(s['f1'], 3)} | {_fmt(s['far'])} | {_fmt(s['mar'])} | {_fmt(s['auroc'], 3)} | "
            f"{s['f1'] - base['f1']:+.3f} | {s['far'] - base['far']:+.2f} | {s['mar'] - base['mar']:+.2f} |"
        )
    path = out / "model-selection.md"
    path.write_text("\n".join(lines) + "\n")
    return path
