"""Checked fields: where a value that came from outside becomes a typed one.

An endpoint is the least trusted part of a fleet, so every field an agent
sends (presence, events, sync reports) passes one of these before anything
stores it, logs it raw or computes with it. Each function takes the decoded
JSON value and ``where``, the field's path (``presence.hostname``), and returns
the value in its checked type, or raises MalformedMessage naming the field and
the rule it broke. The rules are the ones the database and the log need:

- the right JSON type (``true`` is not a number, ``1`` is not a string);
- numbers finite and in a stated range (a date past 2100 is no clock);
- names and ids bounded and free of control characters and lone surrogates
  (no database can store a NUL in text or an unpaired surrogate in UTF-8, and
  a newline forges a log line); free text for a person (``prose``) is cut to
  its length and has such characters written out as escapes instead, so a
  colour code in an error message does not cost the whole message;
- lists bounded in their number of items.

Pure functions, no IO: the broker-link handler and the sync endpoint both
call them, and the tests call them with no server at all.
"""

from __future__ import annotations

import math
import re
from typing import Any

from epns.errors import MalformedMessage

__all__ = [
    "MAX_TIME",
    "array",
    "flag",
    "identifier",
    "integer",
    "mapping",
    "number",
    "optional_text",
    "prose",
    "text",
    "timestamp",
]

# 2100-01-01T00:00:00Z. A later time is no agent's clock, and some date
# formatting (the console's) fails on years past 9999.
MAX_TIME = 4_102_444_800.0
# Command, sync and task ids: printable ASCII without spaces. The server makes
# them (uuid hex); an agent only echoes them back.
_IDENTIFIER = re.compile(r"[!-~]{1,128}")
# Prose may break lines (LF, and CR of a Windows line end) and hold tabs;
# nothing else below a space, nor DEL, the C1 set and lone surrogates.
_NOT_PROSE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _refuse(where: str, rule: str, value: Any) -> MalformedMessage:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return MalformedMessage(f"{where}: {rule}, got {shown}")


def _unicode(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _refuse(where, "holds a lone surrogate, not valid Unicode", value) from exc


def text(value: Any, where: str, *, max_length: int, empty: bool = True) -> str:
    """A one-line string of printable characters, at most ``max_length`` long."""
    if not isinstance(value, str):
        raise _refuse(where, "expected a string", value)
    if len(value) > max_length:
        raise _refuse(where, f"longer than {max_length} characters ({len(value)})", value)
    if not value and not empty:
        raise _refuse(where, "expected a non-empty string", value)
    if not value.isprintable():
        _unicode(value, where)
        raise _refuse(where, "holds a control or unprintable character", value)
    return value


def optional_text(value: Any, where: str, *, max_length: int) -> str | None:
    """``text``, or None when the field is null."""
    return None if value is None else text(value, where, max_length=max_length)


def prose(value: Any, where: str, *, max_length: int) -> str:
    """Free text for a person (an error, a detail): a string, cut to
    ``max_length`` rather than refused (an agent's error may quote a long
    answer), with line breaks and tabs kept and every other control
    character, and a lone surrogate, written out as an escape (a program's
    colour codes or a Windows line end must not cost the whole message)."""
    if not isinstance(value, str):
        raise _refuse(where, "expected a string", value)
    cut: str = value[:max_length]
    return _NOT_PROSE.sub(_escape, cut)


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100 else "\ufffd"


def identifier(value: Any, where: str) -> str:
    """An id the server made and the agent echoes: 1-128 printable ASCII
    characters, no spaces."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise _refuse(where, "expected an id of 1-128 printable ASCII characters", value)
    return value


def number(value: Any, where: str, *, low: float, high: float) -> float:
    """A finite JSON number (int or float, never a bool) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(where, "expected a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(where, "expected a finite number", value)
    # Compared before float(): an int of 400 digits has no float.
    if not low <= value <= high:
        raise _refuse(where, f"expected a number from {low:g} to {high:g}", value)
    return float(value)


def timestamp(value: Any, where: str) -> float:
    """Seconds since the epoch, from 0 to ``MAX_TIME``."""
    return number(value, where, low=0.0, high=MAX_TIME)


def integer(value: Any, where: str, *, low: int, high: int) -> int:
    """A JSON integer (never a bool) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(where, "expected an integer", value)
    if not low <= value <= high:
        raise _refuse(where, f"expected an integer from {low} to {high}", value)
    return value


def flag(value: Any, where: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise _refuse(where, "expected true or false", value)
    return value


def array(value: Any, where: str, *, max_items: int) -> list[Any]:
    """A JSON array of at most ``max_items`` items (checked by the caller)."""
    if not isinstance(value, list):
        raise _refuse(where, "expected an array", value)
    if len(value) > max_items:
        raise MalformedMessage(f"{where}: {len(value)} items, at most {max_items} are allowed")
    return value


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A JSON object (its members are checked by the caller)."""
    if not isinstance(value, dict):
        raise _refuse(where, "expected an object", value)
    return value
