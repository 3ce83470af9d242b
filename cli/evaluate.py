"""The flags of `edgevae evaluate` and the command itself; the protocols are in `edgevae.evaluation.evaluate`."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgevae.core.thresholds import METHODS
from edgevae.evaluation.evaluate import PRECISIONS, PROTOCOLS, EvalConfig, evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = EvalConfig(data=Path(), out=Path())
    # what to evaluate
    parser.add_argument(
        "--data", type=Path, required=True, help="SKAB's data/ folder (valve1, valve2, other, anomaly-free)"
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder: report.md, results.json, plots")
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS), help="protocols to run")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="bundle precisions"
    )
    parser.add_argument("--max-files", type=int, default=None, help="evaluate only the first N labelled files")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and bundles here (default: a temp dir)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: score every model variant of training/sweep.py on the leaderboard protocol (FP32) and "
        "write model-selection.md",
    )
    # model and training
    parser.add_argument("--window", type=int, default=d.window, help=f"window length in rows (default {d.window})")
    parser.add_argument("--arch", default=d.arch, help=f"VAE architecture (default {d.arch})")
    parser.add_argument("--hidden", type=int, default=d.hidden, help=f"hidden width (default {d.hidden})")
    parser.add_argument("--latent", type=int, default=d.latent, help=f"latent dimension (default {d.latent})")
    parser.add_argument("--likelihood", default=d.likelihood, help=f"decoder likelihood (default {d.likelihood})")
    parser.add_argument("--beta", type=float, default=d.beta, help=f"KL weight (default {d.beta})")
    parser.add_argument(
        "--std-floor-rel",
        type=float,
        default=d.std_floor_rel,
        help=f"normalization std floor (default {d.std_floor_rel})",
    )
    parser.add_argument(
        "--kl-warmup-epochs", type=int, default=d.kl_warmup_epochs, help=f"KL warm-up (default {d.kl_warmup_epochs})"
    )
    parser.add_argument(
        "--splits",
        nargs=3,
        type=float,
        default=list(d.splits),
        metavar=("TRAIN", "VAL", "HOLDOUT"),
        help=f"chronological shares of each training file (default {list(d.splits)})",
    )
    parser.add_argument(
        "--score-rows",
        type=int,
        default=d.score_rows,
        help="rows at the end of each window the score covers; 0: the whole window (default: export's)",
    )
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"most training epochs (default {d.epochs})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size (default {d.batch_size})")
    parser.add_argument(
        "--patience", type=int, default=d.patience, help=f"early-stopping patience (default {d.patience})"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    # decision
    parser.add_argument(
        "--threshold-method",
        choices=sorted(METHODS),
        default=d.threshold_method,
        help=f"threshold rule (default {d.threshold_method})",
    )
    parser.add_argument(
        "--threshold-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a parameter of the threshold rule, repeatable (default {d.threshold_params})",
    )
    parser.add_argument(
        "--trigger", type=int, default=d.trigger, help=f"debounce: windows to open (default {d.trigger})"
    )
    parser.add_argument("--clear", type=int, default=d.clear, help=f"debounce: windows to close (default {d.clear})")


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    params: dict[str, Any] = {}
    for item in args.threshold_param:
        key, sep, value = item.partition("=")
        if not sep:
            msg = f"--threshold-param expects KEY=VALUE, got {item!r}"
            raise ValueError(msg)
        params[key] = float(value)
    base = EvalConfig(data=args.data, out=args.out)
    return replace(
        base,
        protocols=tuple(args.protocol),
        precisions=tuple(args.precision),
        max_files=args.max_files,
        window=args.window,
        arch=args.arch,
        hidden=args.hidden,
        latent=args.latent,
        likelihood=args.likelihood,
        beta=args.beta,
        kl_warmup_epochs=args.kl_warmup_epochs,
        splits=tuple(args.splits),
        score_rows=args.score_rows,
        std_floor_rel=args.std_floor_rel,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        threshold_method=args.threshold_method,
        threshold_params=params or (base.threshold_params if args.threshold_method == base.threshold_method else {}),
        trigger=args.trigger,
        clear=args.clear,
        plots=not args.no_plots,
    )


def run_from_args(args: argparse.Namespace) -> int:
    from edgevae.evaluation.report import write_report

    cfg = config_from_args(args)
    if args.sweep:
        from edgevae.evaluation.sweep import sweep, write_sweep

        print(write_sweep(sweep(cfg), cfg.out).read_text())
        return 0
    document = evaluate(cfg, args.workdir)
    paths = write_report(document, cfg.out, plots=cfg.plots)
    print(paths["markdown"].read_text())
    return 0
