"""The flags of `edgevae train-generator` and `edgevae augment`, and the commands themselves."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_train_generator_arguments(parser: argparse.ArgumentParser) -> None:
    from edgevae.training.generators.config import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=_train_generator)


def add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", type=Path, required=True, metavar="DIR", help="run folder of train-generator")
    parser.add_argument("--n", type=int, required=True, help="windows to sample")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.npz", help="file to write")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--batch", type=int, default=1024, help="windows per forward pass (default: 1024)")
    parser.add_argument(
        "--ddim-steps", type=int, default=None, help="diffusion: DDIM steps (default: those in generator.json)"
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar on a terminal"
    )
    parser.set_defaults(func=_augment)


def _train_generator(args: argparse.Namespace) -> int:
    from edgevae.training.generators.config import config_from_args
    from edgevae.training.generators.train import train_generator

    print(f"generator written to {train_generator(config_from_args(args))}")
    return 0


def _augment(args: argparse.Namespace) -> int:
    from edgevae.training.generators.augment import write_synthetic

    out = write_synthetic(args.generator, args.n, args.out, args.seed, args.batch, args.ddim_steps, args.progress)
    print(f"{args.n} synthetic windows written to {out}")
    return 0
