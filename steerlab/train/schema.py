"""Dataclasses from YAML: the validator behind every config section, arms included.

Why a hand-rolled validator: configs are small, and every mistake must be named precisely — an unknown
key, a wrong type or a bad value raises `ConfigError` with the key path (``arms.kl.weight: expected a
number, got 'high'``; the loader adds the file). Supported field types: ``int``, ``float``, ``str``,
``bool``, ``Literal[...]``, ``list[T]``, ``T | None`` and nested dataclasses (a ``float`` must be finite:
YAML's ``.nan`` and ``.inf`` are refused); `check_schema` refuses any
other at registration time, so a malformed arm config fails when its file is imported, not mid-run.

A dataclass validates its own values in ``__post_init__`` by raising `ConfigError` with a key *relative
to itself* (``"weight: must be >= 0, got -1"``); `build` prefixes the path of the section. Fields marked
with `path_field` are resolved against the config file's folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the file and key path."""


def check_number(
    key: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Refuse ``value`` at ``key`` unless it is a finite number (an int if ``integer``; None if ``optional``)
    within the given bounds. Raises `ConfigError` ``"<key>: must be ..., got <value>"``.

    Why one helper: every section's ``__post_init__`` checks its counts, sizes and coefficients at load, so a
    value that could only fail hours later (an eval ``n: 0`` after training) is named when the file is read.
    """
    if value is None and optional:
        return
    null = " (or null)" if optional else ""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: must be an integer{null}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number{null}, got {value!r}")
    for bound, holds, word in (
        (ge, lambda b: value >= b, ">="),
        (gt, lambda b: value > b, ">"),
        (le, lambda b: value <= b, "<="),
        (lt, lambda b: value < b, "<"),
    ):
        if bound is not None and not holds(bound):
            raise ConfigError(f"{key}: must be {word} {bound}{null}, got {value!r}")


def as_mapping(value: Any, where: str) -> dict[str, Any]:
    """A config section as a dict (an absent one, None, is empty); anything else raises `ConfigError`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def path_field(default: Any = None, **kwargs: Any) -> Any:
    """A dataclass field holding a path (or a list of paths), resolved against the config file's folder."""
    if "default_factory" in kwargs:
        return field(metadata={"path": True}, **kwargs)
    return field(default=default, metadata={"path": True}, **kwargs)


_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}


def type_name(tp: Any) -> str:
    """How an error message names a field type (``one of 'a', 'b'``, ``a list of an integer``)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp) or hasattr(tp, "from_config_value"):
        return "a mapping"
    return _SCALARS.get(tp, str(tp))


def check_schema(cls: type, where: str) -> None:
    """Refuse a dataclass whose fields the validator cannot read (raises `TypeError` naming the field)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{where}: expected a dataclass, got {cls!r}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        _check_type(hints[f.name], f"{where}.{f.name}")


def _check_type(tp: Any, where: str) -> None:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(tp):
            _check_type(arg, where)
    elif origin is Literal or tp is type(None) or tp in _SCALARS:
        return
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        check_schema(tp, where)
    else:
        raise TypeError(f"{where}: field type {tp!r} is not supported by the config validator")


def _union(tp: Any, value: Any, where: str, base: Path | None, is_path: bool) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return convert(arg, value, where, base, is_path)
        except ConfigError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")


def _scalar(tp: Any, value: Any, where: str, base: Path | None, is_path: bool) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan / .inf: no setting of steerlab means either
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if is_path and base is not None:
            return str((base / Path(value).expanduser()).resolve())
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")  # pragma: no cover - refused by check_schema


def convert(tp: Any, value: Any, where: str, base: Path | None, is_path: bool = False) -> Any:
    """``value`` read as type ``tp`` at key path ``where``; raises `ConfigError` naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(tp, value, where, base, is_path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [convert(item, v, f"{where}[{i}]", base, is_path) for i, v in enumerate(value)]
    if hasattr(tp, "from_config_value"):  # a section with its own reader (the arms)
        return tp.from_config_value(value, where, base)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, {} if value is None else value, where, base)
    return _scalar(tp, value, where, base, is_path)


def build(cls: type, data: Any, where: str, base: Path | None) -> Any:
    """An instance of dataclass ``cls`` from a mapping; unknown, missing or bad keys raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or '<top level>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (allowed under {where or 'the top level'}: {', '.join(fields)})"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(
                hints[name], data[name], f"{prefix}{name}", base, f.metadata.get("path", False)
            )
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as error:  # __post_init__ names keys relative to its own section
        raise ConfigError(f"{prefix}{error}") from None
