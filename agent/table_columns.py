"""Which columns of a sensor table are time, channels and labels: by the read options, else by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgevae.agent.table_csv import error
from edgevae.agent.table_options import ReadOptions

TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "ts", "date")
LABEL_NAMES = ("anomaly", "changepoint", "label")
# `changepoint` marks onsets only, so row labels come from the first of these that is present.
ROW_LABEL_NAMES = ("anomaly", "label")


@dataclass(frozen=True)
class Columns:
    timestamp: int | None  # None: --period spaces the rows
    channels: list[int]
    label: int | None


def find_columns(path: Path, header: list[str], line: int, options: ReadOptions) -> Columns:
    """Which columns are time, channels and labels, by the options or else by name."""
    lower = [name.lower() for name in header]
    label = _named(path, header, line, options.label_column, "--label-column")
    if label is None:
        label = next((lower.index(name) for name in ROW_LABEL_NAMES if name in lower), None)
    ts = _named(path, header, line, options.timestamp_column, "--timestamp-column")
    if ts is None:
        ts = next((i for i, name in enumerate(lower) if name in TIMESTAMP_NAMES), None)
    if ts is None and options.period is None:
        expected = f"expected a timestamp column (one named {', '.join(TIMESTAMP_NAMES)}), got {header}"
        remedy = "pass --timestamp-column NAME, or --period SECONDS if the rows are evenly spaced"
        raise error(path, line, expected, remedy)
    if options.channels is not None:
        channels = [_named(path, header, line, name, "--channels") for name in options.channels]
        for name, i in zip(options.channels, channels, strict=True):
            if i in (ts, label):
                role = "time" if i == ts else "label"
                raise error(path, line, f"--channels {name!r} is the {role} column; expected a channel")
        return Columns(ts, [i for i in channels if i is not None], label)
    others = [i for i, name in enumerate(lower) if i not in (ts, label) and name not in LABEL_NAMES]
    if not others:
        raise error(path, line, f"expected numeric channels besides timestamp and labels, got {header}")
    names = [header[i] for i in others]
    if len(set(names)) != len(names):
        raise error(path, line, f"expected unique channel names, got {names}")
    return Columns(ts, others, label)


def _named(path: Path, header: list[str], line: int, name: str | None, flag: str) -> int | None:
    """The column a flag names: exactly, else the one that matches ignoring case."""
    if name is None:
        return None
    if name in header:
        return header.index(name)
    folded = [i for i, column in enumerate(header) if column.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise error(path, line, f"{flag} {name!r}: no such column; the file's columns are {header}")
