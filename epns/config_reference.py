"""The configuration reference, generated from the config dataclasses.

Every key of ``agent.toml``, ``broker.toml`` and ``server.toml`` with its type,
its default, its environment variable (``epns.config``: ``{PREFIX}{SECTION}__{KEY}``)
and its meaning: the class docstring for a section, the comment above a field
(or after it) for a key. ``scripts/config-reference`` writes the result to
docs/config-reference.md, and a test fails when that file is stale, so the
docs cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epns import agent_config, broker_config, server_config

__all__ = ["FILES", "ConfigFile", "Key", "render"]


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """One program's config file: its schema and environment prefix."""

    program: str
    file: str
    schema: type[Any]
    prefix: str


FILES = (
    ConfigFile("epns-server", "server.toml", server_config.ServerSettings,
               server_config.ENV_PREFIX),
    ConfigFile("epns-broker", "broker.toml", broker_config.BrokerSettings,
               broker_config.ENV_PREFIX),
    ConfigFile("epns-agent", "agent.toml", agent_config.AgentSettings, agent_config.ENV_PREFIX),
)

_REQUIRED = object()
_NOQA = re.compile(r"^noqa(: *[A-Z0-9, ]+)?( *- *)?")


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: where it is and what it takes."""

    path: tuple[str, ...]
    type: str
    default: str
    env: str
    doc: str


def render() -> str:
    """The whole reference, as Markdown."""
    out = ["# Configuration reference", "",
           "Generated from the config dataclasses (`epns/*_config.py`) by",
           "`scripts/config-reference`; do not edit by hand. A test fails when this",
           "file is stale.", "",
           "Values come from the defaults, then the TOML file (`--config`), then",
           "environment variables `PREFIX` + `SECTION__KEY` in capitals (a list is",
           "comma-separated there, a list of tables is JSON; an empty value clears",
           "an optional setting).",
           "Relative paths in a file are relative to that file.", ""]
    for item in FILES:
        out += _file_section(item)
    return "\n".join(out).rstrip() + "\n"


def _file_section(item: ConfigFile) -> list[str]:
    out = [f"## {item.file} ({item.program}, `{item.prefix}*`)", "",
           _first_paragraph(item.schema), ""]
    for section, doc, keys in _sections(item.schema, item.prefix):
        title = ".".join(section)
        out += [f"### [{title}]" if title else "### top level", ""]
        if doc:
            out += [doc, ""]
        out += ["| key | type | default | environment | meaning |",
                "|---|---|---|---|---|"]
        out += [f"| `{k.path[-1]}` | {k.type} | {k.default} | `{k.env}` | {k.doc} |"
                for k in keys]
        out.append("")
    for path, schema in _table_lists(item.schema):
        out += _table_list_section(path, schema)
    return out


def _table_lists(schema: type[Any], path: tuple[str, ...] = ()
                 ) -> Iterator[tuple[tuple[str, ...], type[Any]]]:
    """Each list-of-tables field (``[[acl.rules]]``) with its table's class."""
    for name, hint in typing.get_type_hints(schema).items():
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and args and dataclasses.is_dataclass(args[0]):
            yield (*path, name), args[0]  # type: ignore[misc]
        elif dataclasses.is_dataclass(hint):
            yield from _table_lists(hint, (*path, name))  # type: ignore[arg-type]


def _table_list_section(path: tuple[str, ...], schema: type[Any]) -> list[str]:
    """The keys of one table of a list of tables; set in the file only (or
    as the whole list, in JSON, in its environment variable)."""
    hints = typing.get_type_hints(schema)
    comments = _field_comments(schema)
    out = [f"### [[{'.'.join(path)}]]", "", _cell(_first_paragraph(schema)), "",
           "| key | type | default | meaning |", "|---|---|---|---|"]
    out += [f"| `{spec.name}` | {_type_name(hints[spec.name])} | "
            f"{_value(_default(spec, None))} | {_cell(comments.get(spec.name, ''))} |"
            for spec in dataclasses.fields(schema)]
    out.append("")
    return out


def _sections(schema: type[Any], prefix: str, path: tuple[str, ...] = (),
              defaults: Any = None) -> Iterator[tuple[tuple[str, ...], str, list[Key]]]:
    """Each section with its scalar keys, depth first, the top level first."""
    hints = typing.get_type_hints(schema)
    comments = _field_comments(schema)
    keys: list[Key] = []
    nested: list[tuple[str, Any, Any]] = []
    for spec in dataclasses.fields(schema):
        default = _default(spec, defaults)
        hint = hints[spec.name]
        if dataclasses.is_dataclass(hint):
            nested.append((spec.name, hint, None if default is _REQUIRED else default))
            continue
        where = (*path, spec.name)
        keys.append(Key(where, _type_name(hint), _value(default),
                        prefix + "__".join(where).upper(), _cell(comments.get(spec.name, ""))))
    if keys:
        yield path, "" if not path else _cell(_first_paragraph(schema)), keys
    for name, hint, default in nested:
        yield from _sections(hint, prefix, (*path, name), default)


def _default(spec: dataclasses.Field[Any], parent: Any) -> Any:
    """The default of a field: from the parent section's default instance when
    there is one (a listener's port is set by its section's factory)."""
    if parent is not None:
        return getattr(parent, spec.name)
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return _REQUIRED


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " (optional)"
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{json.dumps(a)}`" for a in args)
    if origin is tuple:
        if dataclasses.is_dataclass(args[0]):
            return "list of tables (below)"
        return f"list of {_type_name(args[0])}"
    if origin in (dict, Mapping):
        return f"table of {_type_name(args[1])}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _value(value: Any) -> str:
    """A default as it would be written in TOML."""
    if value is _REQUIRED:
        return "**required**"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f"`{json.dumps(str(value))}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(_value(v).strip("`") for v in value) + "]`"
    return f"`{value!r}`"


def _first_paragraph(schema: type[Any]) -> str:
    doc = inspect.getdoc(schema) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _field_comments(schema: type[Any]) -> dict[str, str]:
    """The comment lines above each field of a class, or the one after it."""
    source = inspect.getsource(schema)
    found: dict[str, str] = {}
    pending: list[str] = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = _NOQA.sub("", token.string.lstrip("#").strip())
            if token.line.strip().startswith("#"):
                pending.append(text)
            elif text and (name := _field_name(token.line)) is not None:
                found.setdefault(name, text)
        elif token.type == tokenize.NAME and token.start[1] == 4 and pending:
            name = _field_name(token.line)
            if name is not None:
                found[name] = " ".join(pending)
            pending = []
        elif token.type == tokenize.NL and not token.line.strip():
            pending = []
    return {name: text[0].upper() + text[1:].rstrip(".") + "."
            for name, text in found.items() if text}


def _field_name(line: str) -> str | None:
    match = re.match(r"^    (\w+)\s*:", line)
    return match.group(1) if match else None
