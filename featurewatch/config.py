"""Frozen-dataclass configuration read from a TOML file, then the environment, then flags.

Every config in featurewatch is a frozen dataclass with a docstring per field. `load_config`
builds one from layered sources and raises `ConfigError` naming the source and the field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from featurewatch.errors import ConfigError

T = TypeVar("T")


def check_fields(cfg: Any, table: str, *, positive: tuple[str, ...] = (),
                 non_negative: tuple[str, ...] = ()) -> None:
    """Raise ConfigError naming `table.field` and its value for the first field out of bounds."""
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{table}.{name}={getattr(cfg, name)} must be positive")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{table}.{name}={getattr(cfg, name)} must be >= 0")


def read_toml(path: str | Path, table: str | None = None) -> dict[str, Any]:
    """Read a TOML file (optionally one table of it); errors name the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if table is None:
        return data
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [{table}] must be a table")
    return section


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0], source)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: {name}={value!r} must be one of {list(args)}")
        return value
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{source}: {name} must be a list, got {value!r}")
        elem = args[0] if args else str
        return tuple(_coerce(name, v, elem, source) for v in items if v != "")
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if hint in (int, float, str):
            return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name}={value!r} is not a valid {hint.__name__}") from None
    return value


def load_config(
    cls: type[T],
    *,
    file: str | Path | None = None,
    table: str | None = None,
    env_prefix: str | None = None,
    overrides: dict[str, Any] | None = None,
    base: T | None = None,
) -> T:
    """Build `cls` from `base` (or its defaults) < TOML file < environment < overrides.

    Unknown keys in the file are an error (a typo must not silently fall back to a default).
    Overrides whose value is None are ignored so that unset CLI flags keep earlier layers.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = dataclasses.asdict(base) if base is not None else {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        layers.append((f"config file {file}", read_toml(file, table)))
    if env_prefix:
        env = {k[len(env_prefix):].lower(): v for k, v in os.environ.items()
               if k.startswith(env_prefix)}
        layers.append(("environment", {k: v for k, v in env.items() if k in fields}))
    if overrides:
        layers.append(("flags", {k: v for k, v in overrides.items() if v is not None}))
    for source, layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in fields:
                raise ConfigError(f"{source}: unknown field {key!r}; known: {sorted(fields)}")
            values[key] = _coerce(key, value, hints[key], source)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None
