"""`edgevae export`'s flags and how they map onto `export_bundle`: shared by the command line and the evaluation,
so both export with the same defaults."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from edgevae.core.decision import Debounce
from edgevae.core.errors import ConfigError
from edgevae.core.thresholds import AUTO, METHODS, POT_MIN_WINDOWS, default_params
from edgevae.export.bundle_writer import ExportReport, export_bundle
from edgevae.export.quantize import DEFAULT_PRECISION, Precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `edgevae export`."""
    pot, quantile, scaled = default_params("pot"), default_params("quantile"), default_params("scaled-quantile")
    # What to export and where
    parser.add_argument(
        "--run", type=Path, required=True, help="training run directory (model.pt, meta.json, calibration.npz)"
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to create; must not exist or be empty")
    parser.add_argument(
        "--precision",
        choices=[p.value for p in Precision],
        default=DEFAULT_PRECISION.value,
        help="precision of the shipped model: fp32, fp16 (float16 weights) or int8 (static QDQ, about half the "
        f"size); default {DEFAULT_PRECISION.value}, the faster on ONNX Runtime's CPU backend",
    )
    # Threshold
    parser.add_argument(
        "--threshold-method",
        choices=[AUTO, *sorted(METHODS)],
        default=AUTO,
        help="how the alert threshold is chosen from the hold-out scores of the shipped model: pot "
        "(peaks-over-threshold, extreme-value fit of the tail), quantile, or scaled-quantile (a quantile of the "
        "training windows' scores scaled by the hold-out's excess over them, for short hold-outs); default auto: "
        f"pot from {POT_MIN_WINDOWS:,} hold-out windows, scaled-quantile below (export prints which and why)",
    )
    parser.add_argument(
        "--threshold-risk",
        type=float,
        default=None,
        help=f"pot: probability that a normal window scores above the threshold; default {pot['risk']}",
    )
    parser.add_argument(
        "--threshold-q",
        type=float,
        default=None,
        help=f"quantile, scaled-quantile: quantile of the normal scores; default {quantile['q']} "
        f"(scaled-quantile {scaled['q']})",
    )
    parser.add_argument(
        "--threshold-margin",
        type=float,
        default=None,
        help="quantile, scaled-quantile: factor pushing the threshold above the quantile; default "
        f"{quantile['margin']} (scaled-quantile {scaled['margin']})",
    )
    parser.add_argument(
        "--threshold-ratio-q",
        type=float,
        default=None,
        help="scaled-quantile: quantile at which hold-out and training scores are compared; default "
        f"{scaled['ratio_q']}",
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
        "--generator",
        type=Path,
        default=None,
        metavar="DIR",
        help="a generator run folder (`edgevae train-generator` on the model's data and window) to ship in the "
        "bundle: the agent samples it for its detection self-test (default: none; the bundle's golden windows)",
    )
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build model.plan with TensorRT >= 10; run this on the device itself, engines are not portable",
    )


def export_from_args(args: argparse.Namespace) -> ExportReport:
    """Export as the flags say; errors are ConfigError (flags) or the export's own."""
    flags = {
        "q": args.threshold_q,
        "margin": args.threshold_margin,
        "risk": args.threshold_risk,
        "ratio_q": args.threshold_ratio_q,
    }
    params = {k: v for k, v in flags.items() if v is not None}
    if args.threshold_method != AUTO:
        accepted = inspect.signature(METHODS[args.threshold_method]).parameters
        stray = [f"--threshold-{k.replace('_', '-')}" for k in params if k not in accepted]
        if stray:
            msg = f"{', '.join(stray)} does not apply to --threshold-method {args.threshold_method}"
            raise ConfigError(msg, remedy="drop the flag or choose a method that takes it")
    try:
        debounce = Debounce(trigger=args.debounce_trigger, clear=args.debounce_clear)
    except ValueError as exc:
        raise ConfigError(f"--debounce-trigger/--debounce-clear: {exc}") from exc
    return export_bundle(
        args.run,
        args.out,
        precision=args.precision,
        threshold_method=args.threshold_method,
        threshold_params=params,
        model_id=args.model_id,
        model_version=args.model_version,
        archive=args.archive,
        debounce=debounce,
        tensorrt=args.tensorrt,
        score_rows=args.score_rows,
        generator=args.generator,
    )
