"""Typed configuration: a TOML file plus environment variables, loaded once.

Each program describes its settings as nested frozen dataclasses, and calls
``load`` at its edge. Values come from the dataclass defaults, then the TOML
file, then environment variables named ``{PREFIX}{SECTION}__{KEY}`` (for example
``EPNS_BROKER_LIMITS__MAX_CONNECTIONS=5000``; a list is comma-separated there, a
list of tables JSON). Unknown keys and wrong types are a
ConfigError that names the key, so a typo never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from epns.errors import ConfigError

__all__ = ["build", "load"]

T = TypeVar("T")


def load(schema: type[T], path: Path | None, env: Mapping[str, str], prefix: str) -> T:
    """Build ``schema`` from the TOML file at ``path`` (optional) and ``env``."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for name, value in env.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            _set_path(data, name[len(prefix):].lower().split("__"), value, name)
    return build(schema, data, where=str(path) if path else "defaults")


def _set_path(data: dict[str, Any], keys: list[str], value: str, source: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {key!r} is not a section")
        node = child
    node[keys[-1]] = _EnvValue(value)


class _EnvValue(str):
    """A string from the environment, to be converted to the field's type."""

    __slots__ = ()


def build(schema: type[T], data: Mapping[str, Any], where: str) -> T:
    """Convert ``data`` into the dataclass ``schema``, checking every key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(schema)
    known = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    values = {
        name: _convert(hints[name], _merge_default(known[name], data[name]), f"{where}: {name}")
        for name in known
        if name in data
    }
    try:
        return schema(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _merge_default(spec: dataclasses.Field[Any], value: Any) -> Any:
    """A partial table for a nested section keeps the section's other defaults."""
    if not isinstance(value, Mapping) or spec.default_factory is dataclasses.MISSING:
        return value
    default = spec.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    base = {f.name: getattr(default, f.name) for f in dataclasses.fields(default)}
    return {**base, **value}


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, hint):  # type: ignore[arg-type]
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        # An empty string clears an optional setting, in the file as in the environment.
        if value is None or (isinstance(value, str) and value == "" and type(None) in args):
            return None
        last: ConfigError | None = None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"{where}: unsupported value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if isinstance(value, _EnvValue) and dataclasses.is_dataclass(args[0]):
            return _convert(hint, _json_tables(value, where), where)
        items = value.split(",") if isinstance(value, _EnvValue) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        if dataclasses.is_dataclass(args[0]):
            # Tables are told apart by their position: "rules[2]: ...".
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(items))
        return tuple(_convert(args[0], _wrap(v, value), where) for v in items if v != "")
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table")
        return types.MappingProxyType(
            {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
        )
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)  # type: ignore[arg-type]
    return _scalar(hint, value, where)


def _json_tables(value: str, where: str) -> list[Any]:
    """A list of tables from one environment variable: a comma cannot split
    tables, so it is JSON (``[{"key": "value"}, ...]``)."""
    try:
        items = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: expected a JSON list of objects: {exc}") from exc
    if not isinstance(items, list):
        raise ConfigError(f"{where}: expected a JSON list of objects")
    return items


def _wrap(item: Any, container: Any) -> Any:
    return _EnvValue(item.strip()) if isinstance(container, _EnvValue) else item


def _scalar(hint: Any, value: Any, where: str) -> Any:
    from_env = isinstance(value, _EnvValue)
    # Defaults merged into a partial section arrive already typed (a PosixPath
    # for a Path field); a bool is never taken for an int.
    if not from_env and isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    try:
        if hint is bool:
            if from_env:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
        elif hint is int:
            if from_env or (isinstance(value, int) and not isinstance(value, bool)):
                return int(value)
        elif hint is float:
            if from_env or (isinstance(value, int | float) and not isinstance(value, bool)):
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return str(value)
        elif hint is Path and isinstance(value, str):
            return Path(value)
    except ValueError:
        pass
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: expected {name}, got {value!r}")
