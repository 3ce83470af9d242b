"""The agent's config file: TOML read, validated into `edgevae.agent.config.Config` with every problem named by
key path, value and expectation, and the example file `--print-config` writes, generated from the models."""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError

from edgevae.agent.backends import DEFAULT_BACKEND, REGISTRY, BackendOptions, available_backends
from edgevae.agent.config import CREDENTIALS_ENV, Config, MqttConfig, Problems, join_key, show_value
from edgevae.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# --- reading and validating a document ------------------------------------------------------------------


@dataclass(frozen=True)
class BadValue:
    """One bad value: where it is, what it was, what was expected."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        return f"{self.path}: {show_value(self.value)}: {self.expected}"


class InvalidConfig(ConfigError):
    """Every problem found in one document, each with its key path."""

    def __init__(self, bad_values: list[BadValue]) -> None:
        self.bad_values = bad_values
        super().__init__("\n".join(str(bad_value) for bad_value in bad_values))


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML: {exc}"
        raise ConfigError(msg) from exc


def load_config(data: Mapping[str, Any]) -> Config:
    """Validate a parsed config document; InvalidConfig lists every problem, each with its key path."""
    bad_values: list[BadValue] = []
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        # An inline secret ends up in backups and version control; say what to do instead of "unknown key".
        bad_values.append(
            BadValue("mqtt.password", "***", "no inline passwords: use password_file or password_credential")
        )
        data = {**data, "mqtt": {k: v for k, v in mqtt.items() if k != "password"}}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(bad_values + bad_values_of(exc)) from None
    if bad_values:
        raise InvalidConfig(bad_values)
    return config


def read_password(mqtt: MqttConfig) -> str | None:
    if mqtt.password_file:
        path = mqtt.password_file
    elif mqtt.password_credential:
        path = os.path.join(os.environ.get(CREDENTIALS_ENV, ""), mqtt.password_credential)
    else:
        return None
    # Files written by editors and `echo` end in a newline that is never part of the secret.
    return Path(path).read_text().rstrip("\r\n")


def bad_values_of(exc: ValidationError, root: type[BaseModel] = Config) -> list[BadValue]:
    """pydantic's errors as `key path: value: what was expected`, the expectation written from the field of
    `root`'s tables (the agent's Config, or another program's config model)."""
    out: list[BadValue] = []
    for error in exc.errors():
        path, table, tp, meta = _locate(error["loc"], root)
        value, cause = error["input"], (error.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            out += [BadValue(join_key(path, key), v, expected) for key, v, expected in cause.problems]
        elif error["type"] == "extra_forbidden":
            out.append(BadValue(path, value, f"unknown key; allowed keys: {', '.join(table.model_fields)}"))
        elif error["type"] == "union_tag_invalid":
            out.append(
                BadValue(join_key(path, "type"), error["ctx"]["tag"], f"one of {', '.join(available_backends())}")
            )
        else:
            out.append(BadValue(path, value, _expected(tp, meta)))
    return out


def _locate(loc: tuple[int | str, ...], root: type[BaseModel]) -> tuple[str, type[BaseModel], Any, list[Any]]:
    """(key path, table holding the last key, its type, its constraints) of a pydantic error location."""
    path = ""
    table: type[BaseModel] = root
    tp: Any = root
    meta: list[Any] = []
    for part in loc:
        if isinstance(part, int):  # an item of a list
            path, tp, meta = f"{path}[{part}]", get_args(tp)[0], []
        elif _is_backend_union(tp) and part in REGISTRY:  # the tag pydantic puts in the path inside a union
            tp = REGISTRY[part].options
        elif _is_table(tp):
            table, path = tp, join_key(path, part)
            field = table.model_fields.get(part)
            tp, meta = (field.annotation, field.metadata) if field is not None else (Any, [])
    return path, table, tp, meta


def _is_backend_union(tp: Any) -> bool:
    args = get_args(tp)
    return get_origin(tp) in (Union, types.UnionType) and all(
        _is_table(a) and issubclass(a, BackendOptions) for a in args
    )


def _is_table(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _expected(tp: Any, meta: list[Any]) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if _is_backend_union(tp):
        return f"a table whose `type` is one of {', '.join(available_backends())}"
    if origin in (Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _expected(inner, meta) + ", or left out"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {_expected(args[0], []).removeprefix('a ').removeprefix('an ')}s"
    if _is_table(tp):
        return f"a table with keys: {', '.join(tp.model_fields)}"
    ops = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "<="))
    bounds = [f"{op} {getattr(m, name)}" for m in meta for kind, name, op in ops if isinstance(m, kind)]
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " ".join([names.get(tp, getattr(tp, "__name__", str(tp))), " and ".join(bounds)]).strip()


# --- the example file -------------------------------------------------------------------------------------


def reference(table: type[BaseModel] = Config, path: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """(key path, what is expected, default, description) of every key, for --print-config and the docs.

    `model.backend` is shown with the default backend's keys; the other backends' keys are in docs/agent.md.
    """
    subtables: list[tuple[type[BaseModel], str]] = []
    for name, field in table.model_fields.items():
        key, tp = join_key(path, name), field.annotation
        if _is_backend_union(tp):
            tp = REGISTRY[DEFAULT_BACKEND].options
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            subtables.append((tp, key))  # after the values, as TOML needs
            continue
        expected = _expected(tp, field.metadata)
        if issubclass(table, BackendOptions) and name == "type":
            expected = f"one of {', '.join(available_backends())}"
        yield key, expected, field.get_default(call_default_factory=True), field.description or ""
    for sub, key in subtables:
        yield from reference(sub, key)


def example_toml(table: type[BaseModel] = Config) -> str:
    """A config file that sets every key to its default, each described in a comment."""
    lines: list[str] = []
    section = None
    for key, expected, default, description in reference(table):
        name_of_table, _, name = key.rpartition(".")
        if name_of_table != section:
            lines.append(f"\n[{name_of_table}]")
            section = name_of_table
        lines.append(f"# {description} ({expected})")
        lines.append(f"{name} = {_toml(default)}" if default is not None else f"# {name} =")
    return "\n".join(lines).lstrip() + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)
