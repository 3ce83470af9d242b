"""How a sensor table is read: which column is time and in what unit, which columns are channels and labels,
and what a missing cell means. One set of flags, shared by `edgevae train`, `score`, `evaluate` and `replay`."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from edgevae.core.errors import ConfigError

MISSING_POLICIES = ("fail", "drop", "ffill")
TIMESTAMP_UNITS = ("auto", "s", "ms", "iso")
# A sensor that skips a few readings is common; a longer stretch is an outage, and filling it would show the
# model a flat line that never happened.
DEFAULT_FFILL_LIMIT = 3


@dataclass(frozen=True)
class ReadOptions:
    """The defaults read a file as edgevae always has, and reject a missing cell rather than guess at it.

    >>> ReadOptions(channels=("b", "a"), missing="drop").flags()
    ['--channels', 'b,a', '--missing', 'drop']
    """

    timestamp_column: str | None = None  # None: the first column named like TIMESTAMP_NAMES
    timestamp_unit: str = "auto"  # auto: ISO-8601 text, or epoch seconds / milliseconds by magnitude
    period: float | None = None  # seconds between rows, for a file without a time column
    channels: tuple[str, ...] | None = None  # None: every column but time and labels, in file order
    label_column: str | None = None  # None: `anomaly`, else `label`, when present
    # fail: the default, so that no reading is invented or lost without being asked for.
    missing: str = "fail"
    ffill_limit: int = DEFAULT_FFILL_LIMIT

    def __post_init__(self) -> None:
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise ConfigError(f"--timestamp-unit must be one of {TIMESTAMP_UNITS}, got {self.timestamp_unit!r}")
        if self.missing not in MISSING_POLICIES:
            raise ConfigError(f"--missing must be one of {MISSING_POLICIES}, got {self.missing!r}")
        if self.ffill_limit < 1:
            raise ConfigError(f"--ffill-limit must be >= 1, got {self.ffill_limit}")
        if self.ffill_limit != DEFAULT_FFILL_LIMIT and self.missing != "ffill":
            raise ConfigError(f"--ffill-limit needs --missing ffill, got --missing {self.missing}")
        if self.period is not None:
            if not (math.isfinite(self.period) and self.period > 0):
                raise ConfigError(f"--period must be a number of seconds > 0, got {self.period}")
            if self.timestamp_column is not None or self.timestamp_unit != "auto":
                msg = "--period spaces the rows evenly; --timestamp-column and --timestamp-unit read a time column"
                raise ConfigError(msg, remedy="pass --period or the time column's flags, not both")
        if self.channels is not None:
            if not self.channels or any(not name for name in self.channels):
                raise ConfigError(f"--channels expects comma-separated column names, got {list(self.channels)}")
            if len(set(self.channels)) != len(self.channels):
                raise ConfigError(f"--channels names a column twice: {list(self.channels)}")

    def flags(self) -> list[str]:
        """The command-line flags that give these options (only those that differ from the defaults)."""
        default = ReadOptions()
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(default, f.name):
                continue
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            out += ["--" + f.name.replace("_", "-"), text]
        return out

    def describe(self) -> dict[str, Any]:
        """The options as JSON values, for meta.json and evaluation reports."""
        out = asdict(self)
        out["channels"] = list(self.channels) if self.channels is not None else None
        return out


def add_read_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ReadOptions, as one group of `parser`."""
    group = parser.add_argument_group("reading CSV input")
    group.add_argument(
        "--timestamp-column",
        metavar="NAME",
        help="the column that holds time (default: the first named timestamp, datetime, time, ts or date)",
    )
    group.add_argument(
        "--timestamp-unit",
        choices=TIMESTAMP_UNITS,
        default="auto",
        help="how time is written: s or ms since 1970, or ISO-8601 text; auto tells them apart, numbers above 1e11 "
        "being milliseconds (default: %(default)s)",
    )
    group.add_argument(
        "--period",
        type=float,
        metavar="SECONDS",
        help="for a file without a time column: the rows are evenly spaced this many seconds apart, from 0",
    )
    group.add_argument(
        "--channels",
        metavar="A,B,C",
        help="the channel columns to read, in this order (default: every column but time and labels)",
    )
    group.add_argument(
        "--label-column",
        metavar="NAME",
        help="the column of 0/1 anomaly labels (default: anomaly, else label, when present)",
    )
    group.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="fail",
        help="an empty, NaN or non-numeric cell: fail names its line and column; drop leaves its row out; ffill "
        "repeats the channel's last reading (default: %(default)s)",
    )
    group.add_argument(
        "--ffill-limit",
        type=int,
        metavar="N",
        help=f"with --missing ffill: fill at most N consecutive rows of a channel, fail beyond (default: "
        f"{DEFAULT_FFILL_LIMIT})",
    )


def read_options_from_args(args: argparse.Namespace) -> ReadOptions:
    if args.ffill_limit is not None and args.missing != "ffill":
        raise ConfigError(f"--ffill-limit needs --missing ffill, got --missing {args.missing}")
    channels = None
    if args.channels is not None:
        channels = tuple(name.strip() for name in args.channels.split(","))
    return ReadOptions(
        timestamp_column=args.timestamp_column,
        timestamp_unit=args.timestamp_unit,
        period=args.period,
        channels=channels,
        label_column=args.label_column,
        missing=args.missing,
        ffill_limit=DEFAULT_FFILL_LIMIT if args.ffill_limit is None else args.ffill_limit,
    )
