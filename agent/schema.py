"""Dataclasses as config schemas: build one from a plain dict and report every bad key with its path."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from edgevae.core.errors import ConfigError

T = TypeVar("T")

# A dataclass may define `check(self) -> list[Problem]` for rules across fields; it runs only when every
# field of that dataclass is valid on its own. The key is relative to the dataclass.
Problem = tuple[str, Any, str]


@dataclass(frozen=True)
class BadValue:
    """One bad value: where it is, what it was, what was expected."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.value)}: {self.expected}"


class SchemaError(ConfigError):
    """Every problem found in one document, each with its key path."""

    def __init__(self, bad_values: list[BadValue]) -> None:
        self.bad_values = bad_values
        super().__init__("\n".join(str(bad_value) for bad_value in bad_values))


def describe(cls: type[Any], name: str) -> str:
    """The `description` metadata of field `name` of dataclass `cls`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("description", ""))
    msg = f"{cls.__name__} has no field {name!r}"
    raise KeyError(msg)


def build(cls: type[T], data: Any, path: str = "") -> T:
    """An instance of dataclass `cls` from `data`, or SchemaError listing every problem."""
    bad_values: list[BadValue] = []
    obj = _build(cls, data, path, bad_values)
    if bad_values or obj is None:
        raise SchemaError(bad_values)
    return obj


def reference(cls: type[Any], path: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """(key path, type, default, description) of every leaf field, for generated docs."""
    hints = typing.get_type_hints(cls)
    tables = []
    for f in dataclasses.fields(cls):
        key, tp = _join(path, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            tables.append((typing.cast(type[Any], tp), key))  # after the leaves, as TOML needs
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        yield key, _expected(tp, f.metadata), default, str(f.metadata.get("description", ""))
    for table, key in tables:
        yield from reference(table, key)


def example_toml(cls: type[Any]) -> str:
    """A config file that sets every field of `cls` to its default, each described in a comment."""
    lines: list[str] = []
    section = None
    for key, expected, default, description in reference(cls):
        table, _, name = key.rpartition(".")
        if table != section:
            lines.append(f"\n[{table}]")
            section = table
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
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _build(cls: type[T], data: Any, path: str, bad_values: list[BadValue]) -> T | None:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(data, dict):
        bad_values.append(BadValue(path or "(top level)", data, f"a table with keys: {', '.join(fields)}"))
        return None
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    before = len(bad_values)
    for key, value in data.items():
        if key not in fields:
            bad_values.append(BadValue(_join(path, str(key)), value, f"unknown key; allowed keys: {', '.join(fields)}"))
            continue
        f = fields[key]
        ok, converted = _convert(hints[key], value, _join(path, key), f.metadata, bad_values)
        if ok:
            kwargs[key] = converted
    for key, f in fields.items():
        # A table left out is built from its defaults, so its cross-field checks still run.
        if key not in data and dataclasses.is_dataclass(hints[key]):
            ok, converted = _convert(hints[key], {}, _join(path, key), f.metadata, bad_values)
            if ok:
                kwargs[key] = converted
    if len(bad_values) > before:
        return None
    obj = cls(**kwargs)
    check: Callable[[], list[Problem]] | None = getattr(obj, "check", None)
    if check is not None:
        bad_values.extend(BadValue(_join(path, key), value, expected) for key, value, expected in check())
    return obj


def _convert(tp: Any, value: Any, path: str, meta: Any, bad_values: list[BadValue]) -> tuple[bool, Any]:
    """(True, value converted to `tp`) or (False, None) with an bad_value recorded."""
    expected = _expected(tp, meta)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType) and type(None) in args:
        if value is None:
            return True, None
        (tp,) = (a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        before = len(bad_values)
        obj = _build(typing.cast(type[Any], tp), value, path, bad_values)
        return len(bad_values) == before, obj
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            bad_values.append(BadValue(path, value, expected))
            return False, None
        items = [_convert(args[0], item, f"{path}[{i}]", {}, bad_values) for i, item in enumerate(value)]
        if not all(ok for ok, _ in items):
            return False, None
        converted: Any = tuple(v for _, v in items)
    elif origin is dict:
        if not isinstance(value, dict):
            bad_values.append(BadValue(path, value, expected))
            return False, None
        converted = dict(value)
    elif origin is Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            bad_values.append(BadValue(path, value, expected))
            return False, None
        converted = value
    elif tp is bool:
        if not isinstance(value, bool):
            bad_values.append(BadValue(path, value, expected))
            return False, None
        converted = value
    elif tp is int or tp is float:
        # bool is an int subclass; `true` is never a number in a config file.
        bad = isinstance(value, bool) or not isinstance(value, (int, float) if tp is float else int)
        if bad or (tp is float and not math.isfinite(value)):
            bad_values.append(BadValue(path, value, expected))
            return False, None
        converted = tp(value)
    elif tp is str:
        if not isinstance(value, str):
            bad_values.append(BadValue(path, value, expected))
            return False, None
        converted = value
    else:
        converted = value
    if not _in_bounds(converted, meta):
        bad_values.append(BadValue(path, value, expected))
        return False, None
    return True, converted


def _in_bounds(value: Any, meta: Any) -> bool:
    if "ge" in meta and value < meta["ge"]:
        return False
    if "gt" in meta and value <= meta["gt"]:
        return False
    return not ("le" in meta and value > meta["le"])


def _expected(tp: Any, meta: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _expected(inner, meta) + ", or left out"
    bounds = " and ".join(f"{op} {meta[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if key in meta)
    bounds = f" {bounds}" if bounds else ""
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {_expected(args[0], {}).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp))) + bounds
