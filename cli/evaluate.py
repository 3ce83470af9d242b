"""The flags of `edgevae evaluate` and the command itself; the protocols are in `edgevae.evaluation.evaluate`
(SKAB) and `edgevae.evaluation.labelled` (the user's own labelled files, with --label-column).

Models are trained and exported with `edgevae train` and `edgevae export`'s defaults, so the figures are what
a user gets; `--train-flags` and `--export-flags` pass extra flags to those commands to evaluate a variant.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgevae.agent.table_options import add_read_arguments, read_options_from_args
from edgevae.core.errors import ConfigError
from edgevae.evaluation.augmentation import AUGMENT_KINDS, Augmentation
from edgevae.evaluation.evaluate import PRECISIONS, PROTOCOLS, EvalConfig, evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = EvalConfig(data=Path(), out=Path())
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="SKAB's data/ folder (valve1, valve2, other, anomaly-free); with --label-column, your own labelled CSV "
        "file or folder of them",
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder: report.md, results.json, plots")
    parser.add_argument(
        "--protocol", nargs="+", choices=PROTOCOLS, help=f"SKAB's protocols to run (default: {' '.join(PROTOCOLS)})"
    )
    parser.add_argument(
        "--train",
        type=Path,
        metavar="NORMAL",
        help="with --label-column: a CSV file or folder of normal data; one model trained on it scores every "
        "labelled file whole (default: a model per file, fit on its rows before the first labelled anomaly)",
    )
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="bundle precisions"
    )
    parser.add_argument("--max-files", type=int, default=None, help="evaluate only the first N labelled files")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and bundles here (default: a temp dir)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"training seed (default {d.seed})")
    parser.add_argument(
        "--train-flags",
        default="",
        metavar="FLAGS",
        help='extra `edgevae train` flags, quoted as one argument, e.g. "--window 48" (default: none)',
    )
    parser.add_argument(
        "--export-flags",
        default="",
        metavar="FLAGS",
        help='extra `edgevae export` flags, quoted as one argument, e.g. "--debounce-clear 10" (default: none)',
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_KINDS,
        default=None,
        help="train each model with synthetic windows from a generator of this kind, trained on the model's own fit "
        "rows (default: none)",
    )
    parser.add_argument(
        "--augment-ratio",
        type=float,
        default=1.0,
        help="with --augment: synthetic windows per real training window (default 1.0)",
    )
    parser.add_argument(
        "--generator-flags",
        default="",
        metavar="FLAGS",
        help='with --augment: extra `edgevae train-generator` flags, quoted as one argument, e.g. "--steps 1000"',
    )
    parser.add_argument(
        "--fit-fraction",
        type=float,
        default=1.0,
        help="fit the model on this leading share of anomaly-free.csv (deployment protocol), of each file's rows "
        "before its first anomaly, or of --train's data (default 1.0: all of it)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: score every model variant of edgevae.evaluation.sweep on the leaderboard protocol (FP32) "
        "and write model-selection.md",
    )
    add_read_arguments(parser)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    if not 0 < args.fit_fraction <= 1:
        raise ConfigError(f"--fit-fraction must be > 0 and <= 1, got {args.fit_fraction}")
    if not args.augment_ratio > 0:
        raise ConfigError(f"--augment-ratio must be > 0, got {args.augment_ratio}")
    if args.augment is None and (args.generator_flags or args.augment_ratio != 1.0):
        msg = "--augment-ratio and --generator-flags need --augment gan|diffusion"
        raise ConfigError(msg)
    read = read_options_from_args(args)
    if read.label_column is None and args.train is not None:
        msg = "--train needs --label-column COL: it evaluates your own labelled files"
        raise ConfigError(msg)
    if read.label_column is not None and (args.protocol or args.sweep):
        msg = "--protocol and --sweep are SKAB's; with --label-column the protocol is a model per file, or --train's"
        raise ConfigError(msg)
    augmentation = None
    if args.augment is not None:
        augmentation = Augmentation(args.augment, args.augment_ratio, tuple(shlex.split(args.generator_flags)))
    return EvalConfig(
        data=args.data,
        out=args.out,
        protocols=tuple(args.protocol or PROTOCOLS),
        precisions=tuple(args.precision),
        max_files=args.max_files,
        seed=args.seed,
        train_flags=tuple(shlex.split(args.train_flags)),
        export_flags=tuple(shlex.split(args.export_flags)),
        plots=not args.no_plots,
        augment=augmentation,
        fit_fraction=args.fit_fraction,
        read=read,
        train=args.train,
    )


# The commands an evaluation runs dozens of times: their per-run INFO lines would bury the report.
# The reader's per-file counts of missing cells are in the report instead.
QUIET_DURING_EVALUATION = (
    "edgevae.training",
    "edgevae.export",
    "edgevae.evaluation.commands",
    "edgevae.agent.table",
    "onnxruntime",
)


@contextmanager
def _quiet_commands() -> Iterator[None]:
    """Warnings only from the commands an evaluation runs, unless the log level is debug; restored after."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_DURING_EVALUATION]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def run_from_args(args: argparse.Namespace) -> int:
    from edgevae.evaluation.report import write_report

    cfg = config_from_args(args)
    with _quiet_commands():
        if args.sweep:
            from edgevae.evaluation.sweep import sweep, write_sweep

            print(write_sweep(sweep(cfg), cfg.out).read_text())
            return 0
        document = evaluate(cfg, args.workdir)
    paths = write_report(document, cfg.out, plots=cfg.plots)
    print(paths["markdown"].read_text())
    return 0
