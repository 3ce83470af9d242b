"""`edgevae generator-report`: the fidelity of a generator's windows, written as report.md, results.json and
PNG plots (the figures are in `edgevae.evaluation.fidelity`, what they mean in docs/generators.md)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevae.evaluation import fidelity as fid
from edgevae.evaluation.fidelity_stats import subset
from edgevae.evaluation.generator_data import (
    RealWindows,
    SyntheticWindows,
    align_channels,
    read_synthetic,
    sample_generator,
)

logger = logging.getLogger(__name__)

# Sines (TimeGAN's benchmark) in Diffusion-TS (ICLR 2024), Table 1: discriminative and predictive scores. Its
# "±" is a 95 % t-interval over 5 runs, which is 1.39 times the runs' std.
PUBLISHED_SINES: list[tuple[str, str, str]] = [
    ("Diffusion-TS", "0.006 ± 0.007", "0.093"),
    ("TimeGAN", "0.011 ± 0.008", "0.093"),
    ("TimeVAE", "0.041", "0.093"),
    ("real data", "", "0.094"),
]
DEFAULT_WINDOWS = 10_000  # the papers' Sines: 10,000 real and 10,000 synthetic windows


@dataclass(frozen=True)
class ReportSettings:
    runs: int = fid.RUNS
    steps: int = fid.DISCRIMINATIVE_STEPS
    predictive_steps: int = fid.PREDICTIVE_STEPS
    seed: int = 0
    acf_lags: int = fid.ACF_LAGS
    bins: int = fid.MARGINAL_BINS
    mmd_windows: int = fid.MMD_MAX_WINDOWS
    plots: bool = True


def _spread(s: fid.Spread) -> dict[str, Any]:
    return {"mean": s.mean, "std": s.std, "runs": list(s.values)}


def _statistics(real: np.ndarray, other: np.ndarray, cfg: ReportSettings, channels: tuple[str, ...]) -> dict[str, Any]:
    """The figures that need no training, of `other` against `real`."""
    marginal = fid.marginal_distance(real, other, cfg.bins)
    acf = fid.acf_difference(real, other, cfg.acf_lags)
    return {
        "mmd2": fid.mmd_rbf(real, other, cfg.mmd_windows, cfg.seed),
        "marginal_tv": {
            "mean": float(marginal.mean()),
            "per_channel": dict(zip(channels, marginal.tolist(), strict=True)),
        },
        "acf_difference": {"mean": float(acf.mean()), "per_lag": acf.mean(axis=0).tolist()},
        "correlation_difference": fid.correlation_difference(real, other),
    }


def measure(real: RealWindows, synthetic: SyntheticWindows, cfg: ReportSettings) -> dict[str, Any]:
    """Every figure of `synthetic` against `real`, with real-vs-held-out-real references where they are cheap."""
    synthetic = align_channels(synthetic, real)
    rng = np.random.default_rng(cfg.seed)
    # As many real windows as synthetic ones, as the papers compare them.
    ref = subset(real.train, len(synthetic.windows), rng)
    syn = synthetic.windows
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    figures = _statistics(ref, syn, cfg, real.channels)
    reference = _statistics(ref, real.holdout, cfg, real.channels)
    figures["memorization"] = asdict(fid.memorization(real.train, real.holdout, syn, seed=cfg.seed))
    seconds["statistics"] = time.perf_counter() - started
    started = time.perf_counter()
    figures["discriminative"] = _spread(fid.discriminative_score(ref, syn, cfg.runs, cfg.steps, cfg.seed))
    seconds["discriminative"] = time.perf_counter() - started
    started = time.perf_counter()
    predictive = fid.predictive_score(ref, syn, cfg.runs, cfg.predictive_steps, cfg.seed)
    synthetic_raw, real_raw = predictive.raw
    figures["predictive"] = {
        "synthetic": _spread(predictive.synthetic),
        "real": _spread(predictive.real),
        # The same in the forecast channel's own units (the units of the published Sines figures).
        "target": real.channels[-1],
        "target_span": predictive.target_span,
        "synthetic_raw": _spread(synthetic_raw),
        "real_raw": _spread(real_raw),
    }
    seconds["predictive"] = time.perf_counter() - started
    logger.info("generator report: %s", {k: round(v, 1) for k, v in seconds.items()})
    return {
        "settings": asdict(cfg),
        "real": {
            "source": real.source,
            "channels": list(real.channels),
            "window": int(real.train.shape[1]),
            "train_windows": len(real.train),
            "holdout_windows": len(real.holdout),
            "compared_windows": len(ref),
        },
        "synthetic": {"source": synthetic.source, "kind": synthetic.kind, "windows": len(syn)},
        "figures": figures,
        "reference": reference,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def generator_report(
    synthetic: Path | SyntheticWindows,
    real: RealWindows,
    out: Path,
    settings: ReportSettings | None = None,
    n: int = DEFAULT_WINDOWS,
) -> dict[str, Path]:
    """Measure a generator (a run folder, sampled `n` times), an .npz of windows, or windows in hand, and
    write the report under `out`; returns the paths written."""
    from edgevae.evaluation.generator_plots import write_plots

    cfg = settings or ReportSettings()
    if isinstance(synthetic, Path):
        is_file = synthetic.suffix == ".npz"
        synthetic = read_synthetic(synthetic, n, cfg.seed) if is_file else sample_generator(synthetic, n, cfg.seed)
    synthetic = align_channels(synthetic, real)
    document = measure(real, synthetic, cfg)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")
    images = write_plots(real, synthetic, out, cfg.seed) if cfg.plots else []
    paths.update({p.stem: p for p in images})
    paths["markdown"].write_text(markdown(document, images))
    return paths


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None (JSON has no inf or NaN; the ratio is inf for a held-out
    set whose every window is a training window)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _f(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _verdict(flagged: bool) -> str:
    return "FLAGGED: synthetic windows look like copies of training windows" if flagged else "not flagged"


def _pm(s: dict[str, Any]) -> str:
    return f"{_f(s['mean'])} ± {_f(s['std'])}"


def markdown(document: dict[str, Any], images: list[Path]) -> str:
    f, ref, cfg = document["figures"], document["reference"], document["settings"]
    real, syn, mem = document["real"], document["synthetic"], document["figures"]["memorization"]
    lines = [
        "# Generator fidelity",
        "",
        f"Synthetic: {syn['source']} ({syn['kind']}, {syn['windows']} windows). Real: {real['source']}; "
        f"{real['compared_windows']} of its {real['train_windows']} training windows compared, "
        f"{real['holdout_windows']} held-out windows for the references and the memorization check. "
        f"Windows of {real['window']} steps, channels {', '.join(real['channels'])}.",
        "",
        "All figures are in units min-max scaled by the real windows; lower is closer to the real data. "
        "docs/generators.md says what each one means.",
        "",
        "| figure | synthetic | held-out real (reference) |",
        "|---|---|---|",
        f"| discriminative score, \\|accuracy − 0.5\\| (mean ± std) | {_pm(f['discriminative'])} | |",
        f"| predictive score, MAE: trained on synthetic, tested on real | {_pm(f['predictive']['synthetic'])} | "
        f"{_pm(f['predictive']['real'])} (trained on real) |",
        f"| the same in {f['predictive']['target']}'s units | {_pm(f['predictive']['synthetic_raw'])} | "
        f"{_pm(f['predictive']['real_raw'])} |",
        f"| MMD² (RBF, median bandwidth) | {_f(f['mmd2'], 4)} | {_f(ref['mmd2'], 4)} |",
        f"| marginal distance (total variation, mean over channels) | {_f(f['marginal_tv']['mean'])} | "
        f"{_f(ref['marginal_tv']['mean'])} |",
        f"| autocorrelation difference (lags 1–{len(f['acf_difference']['per_lag'])}) | "
        f"{_f(f['acf_difference']['mean'])} | {_f(ref['acf_difference']['mean'])} |",
        f"| cross-channel correlation difference | {_f(f['correlation_difference'])} | "
        f"{_f(ref['correlation_difference'])} |",
        "",
        "## Memorization",
        "",
        "L2 distance of each window to its nearest training window (scaled units, flattened windows):",
        "",
        f"- median, synthetic: {_f(mem['synthetic_median'])}; training windows to the nearest training window "
        f"that shares no row with them: {_f(mem['reference_median'])}; ratio {_f(mem['ratio'], 2)} (near 1 or "
        "above: no copying; near 0: copies)",
        f"- held-out real windows (later data: drift shows here): median {_f(mem['holdout_median'])}",
        f"- synthetic windows closer than the training windows' 1st percentile ({_f(mem['reference_p1'])}): "
        f"{100 * mem['fraction_closer']:.1f} % (about 1 % when nothing is copied); exact copies "
        f"{100 * mem['exact_copies']:.1f} %",
        f"- **{_verdict(mem['flagged'])}** (flagged above {100 * fid.MEMORIZATION_FLAG:.0f} %)",
        "",
        "## Published on Sines",
        "",
        "Diffusion-TS (ICLR 2024), Table 1; comparable when the real data is `--sines` and the settings are the",
        "defaults. Its ± is a 95 % interval over 5 runs (about 1.39 × std); its predictive MAE is in the data's own",
        "units (Sines values lie in [0.5, 1]): compare it with the row in the forecast channel's units.",
        "",
        "| model | discriminative | predictive |",
        "|---|---|---|",
        *[f"| {name} | {d} | {p} |" for name, d, p in PUBLISHED_SINES],
        "",
        "## Settings",
        "",
        f"Discriminative: {cfg['runs']} runs × {cfg['steps']} steps; predictive: {cfg['runs']} runs × "
        f"{cfg['predictive_steps']} steps; a GRU of max(1, channels // 2) units, Adam 1e-3, batch 128, 80/20 "
        f"splits; MMD on up to {cfg['mmd_windows']} windows a side; {cfg['bins']} histogram bins; seed "
        f"{cfg['seed']}. Seconds: " + ", ".join(f"{k} {v}" for k, v in document["seconds"].items()) + ".",
        "",
    ]
    if images:
        lines += ["## Plots", "", *[f"![{p.stem}]({p.name})" for p in images], ""]
    return "\n".join(lines)
