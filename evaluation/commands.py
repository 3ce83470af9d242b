"""`edgevae train` and `edgevae export` run from Python exactly as the command line would: the argument list is
parsed by each command's own flags, so a model made here is one the user could make by hand, defaults included."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgevae.core.errors import ConfigError

if TYPE_CHECKING:  # the export pulls in torch; importing this module for parse_flags must not
    from edgevae.export.bundle_writer import ExportReport

AddArguments = Callable[[argparse.ArgumentParser], None]


class FlagError(ConfigError):
    """Flags a command does not take; `problem` says which, without the whole command line."""

    def __init__(self, argv: Sequence[str], problem: str) -> None:
        super().__init__(f"{' '.join(argv)}: {problem}")
        self.problem = problem


def parse_flags(add_arguments: AddArguments, argv: Sequence[str]) -> argparse.Namespace:
    """`argv` parsed by a command's own flags; a flag it does not know or a bad value is a FlagError.

    argparse exits the process on unrecognized arguments even with exit_on_error=False, so those are
    collected with parse_known_args and reported here instead.
    """
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise FlagError(argv, str(exc)) from exc
    if unknown:
        raise FlagError(argv, f"unrecognized arguments: {' '.join(unknown)}")
    return args


def train_flags() -> AddArguments:
    from edgevae.training.config import add_arguments

    return add_arguments


def export_flags() -> AddArguments:
    from edgevae.export.options import add_arguments

    return add_arguments


def run_train(argv: Sequence[str]) -> Path:
    """`edgevae train ARGV`; returns the run directory."""
    from edgevae.training.config import config_from_args
    from edgevae.training.train_vae import train

    return train(config_from_args(parse_flags(train_flags(), argv)))


def run_export(argv: Sequence[str]) -> ExportReport:
    """`edgevae export ARGV`."""
    from edgevae.export.options import export_from_args

    return export_from_args(parse_flags(export_flags(), argv))


def run_train_generator(argv: Sequence[str]) -> Path:
    """`edgevae train-generator ARGV`; returns the run folder."""
    from edgevae.training.generators.config import add_arguments, config_from_args
    from edgevae.training.generators.train import train_generator

    return train_generator(config_from_args(parse_flags(add_arguments, argv)))


def flag_value(flags: Sequence[str], name: str) -> str | None:
    """The value `flags` give the flag `name` (as `--name V` or `--name=V`), or None.

    >>> flag_value(("--epochs", "3", "--window=48"), "--window")
    '48'
    """
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            return flags[i + 1]
        if flag.startswith(name + "="):
            return flag.split("=", 1)[1]
    return None
