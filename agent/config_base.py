"""What every table of the agent's config shares: strict pydantic models, problems reported by key path,
and the limits MQTT puts on strings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
TOPIC_CHARS = frozenset("+#/")
MQTT_STRING_BYTES = 65535  # the longest UTF-8 string MQTT carries: a client id, user name or topic

# (key relative to the table that found it, the value, what was expected); "" is the key that table sits at.
Problem = tuple[str, Any, str]


class Problems(ValueError):
    """Raised by a validator with every problem it found; `load_config` reports each under its own key path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {value!r}: {expected}" for key, value, expected in problems))


def raise_any(problems: list[Problem]) -> None:
    if problems:
        raise Problems(problems)


class Table(BaseModel):
    """Base of every table: unknown keys are errors, and values are taken as TOML typed them ("60" is no number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Document(Table):
    """A whole config file: a table left out is validated from {}, in place, so that its rules run and its
    errors have key paths (a file without [model] says that the bundle is missing); the tables' default
    factories are never called."""

    @model_validator(mode="before")
    @classmethod
    def _validate_left_out_tables(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {**{name: {} for name in cls.model_fields}, **data}
        return data


STATE_ENV = "STATE_DIRECTORY"  # set by systemd's StateDirectory=


def state_directory(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """systemd's `$STATE_DIRECTORY` (the first of them), else `$XDG_STATE_HOME/<name>`, else
    `~/.local/state/<name>`.

    >>> str(state_directory("edgevae", {"STATE_DIRECTORY": "/var/lib/edgevae:/var/lib/other"}))
    '/var/lib/edgevae'
    >>> str(state_directory("edgevae", {"XDG_STATE_HOME": "/tmp/x"}))
    '/tmp/x/edgevae'
    """
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV].split(":")[0])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / name


MQTT_STRING = f"at most {MQTT_STRING_BYTES} bytes of UTF-8, without U+0000 (an MQTT string)"


def mqtt_string(text: str) -> bool:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from an undecodable command-line byte
        return False
    return "\0" not in text and len(encoded) <= MQTT_STRING_BYTES


def join_key(path: str, key: int | str) -> str:
    return f"{path}.{key}" if path and key != "" else path or str(key)


def show_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)
