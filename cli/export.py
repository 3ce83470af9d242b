"""The flags of `edgevae export` and the command itself; the work is in `edgevae.export.bundle_writer`."""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from edgevae.core.decision import Debounce
from edgevae.core.errors import EdgeVAEError
from edgevae.core.thresholds import METHODS
from edgevae.export.bundle_writer import export_bundle
from edgevae.export.quantize import Precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `edgevae export`."""
    # What to export and where
    parser.add_argument(
        "--run", type=Path, required=True, help="training run directory (model.pt, meta.json, calibration.npz)"
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to create; must not exist or be empty")
    parser.add_argument(
        "--precision",
        choices=[p.value for p in Precision],
        default=Precision.INT8.value,
        help="precision of the shipped model: fp32, fp16 (float16 weights) or int8 (static QDQ); default int8",
    )
    # Threshold
    parser.add_argument(
        "--threshold-method",
        choices=sorted(METHODS),
        default="pot",
        help="how the alert threshold is chosen from the hold-out scores of the shipped model: pot "
        "(peaks-over-threshold, extreme-value fit of the tail), quantile, or scaled-quantile (a quantile of the "
        "training windows' scores scaled by the hold-out's excess over them, for short hold-outs); default pot",
    )
    parser.add_argument(
        "--threshold-risk",
        type=float,
        default=None,
        help="pot: probability that a normal window scores above the threshold; default 1e-3",
    )
    parser.add_argument(
        "--threshold-q",
        type=float,
        default=None,
        help="quantile, scaled-quantile: quantile of the normal scores; default 0.995 (scaled-quantile 0.99)",
    )
    parser.add_argument(
        "--threshold-margin",
        type=float,
        default=None,
        help="quantile, scaled-quantile: factor pushing the threshold above the quantile; default 1.0",
    )
    parser.add_argument(
        "--threshold-ratio-q",
        type=float,
        default=None,
        help="scaled-quantile: quantile at which hold-out and training scores are compared; default 0.95",
    )
    # Identity and packaging
    parser.add_argument("--model-id", help="model id in the manifest; default: meta.json's, else the run folder name")
    parser.add_argument("--model-version", help="model version in the manifest; default: UTC time YYYYMMDD.HHMMSS")
    parser.add_argument("--archive", action="store_true", help="also write <out>.tar.gz")
    parser.add_argument(
        "--debounce-trigger",
        type=int,
        default=Debounce().trigger,
        help="consecutive windows above threshold that open an alert",
    )
    parser.add_argument(
        "--debounce-clear", type=int, default=Debounce().clear, help="consecutive windows below threshold that close it"
    )
    parser.add_argument(
        "--score-rows",
        type=int,
        default=None,
        help="rows at the end of each window that the score covers, the rest being context; 0: the whole window "
        "(default: a quarter of the window, at least debounce-trigger x stride)",
    )
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build model.plan with TensorRT >= 10; run this on the device itself, engines are not portable",
    )


def run_from_args(args: argparse.Namespace) -> int:
    flags = {
        "q": args.threshold_q,
        "margin": args.threshold_margin,
        "risk": args.threshold_risk,
        "ratio_q": args.threshold_ratio_q,
    }
    params = {k: v for k, v in flags.items() if v is not None}
    accepted = inspect.signature(METHODS[args.threshold_method]).parameters
    stray = [f"--threshold-{k.replace('_', '-')}" for k in params if k not in accepted]
    if stray:
        print(
            f"export failed: {', '.join(stray)} does not apply to --threshold-method {args.threshold_method}",
            file=sys.stderr,
        )
        return 2
    try:
        report = export_bundle(
            args.run,
            args.out,
            precision=args.precision,
            threshold_method=args.threshold_method,
            threshold_params=params,
            model_id=args.model_id,
            model_version=args.model_version,
            archive=args.archive,
            debounce=Debounce(trigger=args.debounce_trigger, clear=args.debounce_clear),
            tensorrt=args.tensorrt,
            score_rows=args.score_rows,
        )
    except EdgeVAEError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
