"""The flags of `edgevae generator-report` and the command itself; the figures are in
`edgevae.evaluation.fidelity`, the report in `edgevae.evaluation.generator_report`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgevae.core.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgevae.evaluation.generator_report import DEFAULT_WINDOWS, ReportSettings

    d = ReportSettings()
    # what to measure
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--generator", type=Path, metavar="DIR", help="a generator run folder to sample from")
    source.add_argument(
        "--synthetic", type=Path, metavar="FILE", help="an .npz of windows written by `edgevae augment` instead"
    )
    parser.add_argument(
        "--n", type=int, default=DEFAULT_WINDOWS, help=f"synthetic windows to compare (default {DEFAULT_WINDOWS})"
    )
    # what to compare with
    parser.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="the CSV file or folder the generator was trained on, as given to `edgevae train --data` "
        "(normal rows, windowed at the generator's window); omit for the simulated plant",
    )
    parser.add_argument(
        "--sines", action="store_true", help="compare with the Sines benchmark instead (10,000 windows of --sim-seed)"
    )
    parser.add_argument("--sim-rows", type=int, default=50_000, help="simulated rows when --data is omitted")
    parser.add_argument(
        "--sim-seed", type=int, default=0, help="seed of the simulated plant or of the Sines data (default 0)"
    )
    # how
    parser.add_argument("--out", type=Path, required=True, help="report folder: report.md, results.json, plots")
    parser.add_argument("--runs", type=int, default=d.runs, help=f"runs of each post-hoc model (default {d.runs})")
    parser.add_argument(
        "--steps",
        type=int,
        default=d.steps,
        help=f"training steps of the discriminative classifier (default {d.steps})",
    )
    parser.add_argument(
        "--predictive-steps",
        type=int,
        default=d.predictive_steps,
        help=f"training steps of the predictive forecaster (default {d.predictive_steps})",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the sampling and of every figure")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run_from_args(args: argparse.Namespace) -> int:
    from edgevae.evaluation.generator_data import (
        read_synthetic,
        sample_generator,
        sines_windows,
        table_windows,
    )
    from edgevae.evaluation.generator_report import ReportSettings, generator_report

    for flag in ("n", "runs", "steps", "predictive_steps"):
        if getattr(args, flag) < 1:
            msg = f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}"
            raise ConfigError(msg)
    if args.sines and args.data is not None:
        msg = "--sines and --data both name the real data"
        raise ConfigError(msg, remedy="give one of them")
    settings = ReportSettings(args.runs, args.steps, args.predictive_steps, args.seed, plots=not args.no_plots)
    if args.generator is not None:
        synthetic = sample_generator(args.generator, args.n, args.seed)
    else:
        synthetic = read_synthetic(args.synthetic, args.n, args.seed)
    window = synthetic.windows.shape[1]
    if args.sines:
        real = sines_windows(window, synthetic.channels, seed=args.sim_seed)
    else:
        real = table_windows(args.data, window, args.sim_rows, args.sim_seed)
    paths = generator_report(synthetic, real, args.out, settings)
    print(paths["markdown"].read_text())
    return 0
