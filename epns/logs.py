"""Structured logging: one line per event, as text or JSON.

Call sites log an event name and fields: ``event(log, "refused", client=..)``.
The text form is ``event key=value ...``; the JSON form is one object a line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["LogSettings", "RateLimitedLog", "Throttle", "configure", "event"]

_FIELDS = "epns_fields"


@dataclass(frozen=True)
class LogSettings:
    """Structured logs: one line per event."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields, if the level is enabled."""
    if logger.isEnabledFor(level):
        text = " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        logger.log(level, f"{name} {text}" if text else name,
                   extra={_FIELDS: {"event": name, **fields}})


def _quote(value: Any) -> str:
    """A field's value in the text format: as is when that cannot be misread,
    else as a JSON string, which escapes quotes, backslashes, line breaks and
    every other control character. A value from outside (an agent's reference,
    a hostname) thus never starts a line of its own, nor fakes a field."""
    text = str(value)
    if text and text.isprintable() and " " not in text and '"' not in text:
        return text
    return json.dumps(text)


class Throttle:
    """At most one log line per key and ``interval``: what a flood of bad
    messages from one agent may cost the log. Pure state; the caller passes
    the clock. ``admit`` says whether to log now and how many lines for the
    key were held back since the last one, so the next line can say so."""

    def __init__(self, interval: float, max_keys: int = 10_000) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[tuple[str, ...], float] = {}
        self._held: dict[tuple[str, ...], int] = {}

    def admit(self, key: tuple[str, ...], now: float) -> tuple[bool, int]:
        """(log it now?, lines held back for ``key`` since its last line)."""
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        if last is None and len(self._last) >= self._max_keys:
            self._forget(now)
        self._last[key] = now
        return True, self._held.pop(key, 0)

    def holding(self) -> bool:
        """Whether any key has lines held back."""
        return bool(self._held)

    def overdue(self, now: float) -> list[tuple[tuple[str, ...], int]]:
        """The keys with lines held back whose interval has passed, each with
        its count; they count as logged now."""
        due = [(key, held) for key, held in self._held.items()
               if now - self._last[key] >= self._interval]
        for key, _ in due:
            del self._held[key]
            self._last[key] = now
        return due

    def _forget(self, now: float) -> None:
        # Keys whose interval has passed owe nothing but their held count,
        # which a flood of new keys may cost: the bound on memory comes first.
        # Were the table still full, the half first admitted goes too (their
        # next line comes early; order is first admission, as admit() updates
        # a key in place), so that a burst of new keys costs neither unbounded
        # memory nor a pass over the table for each key.
        fresh = [(k, t) for k, t in self._last.items() if now - t < self._interval]
        if len(fresh) >= self._max_keys:
            fresh = fresh[len(fresh) - self._max_keys // 2:]
        self._last = dict(fresh)
        self._held = {k: n for k, n in self._held.items() if k in self._last}


def throttled_event(throttle: Throttle, key: tuple[str, ...], now: float,
                    logger: logging.Logger, name: str, *, level: int = logging.WARNING,
                    **fields: Any) -> bool:
    """Log ``name`` with ``fields`` unless ``throttle`` holds ``key`` back;
    the line says ``suppressed=N`` when N were held back since the last one.
    True when written."""
    due, held = throttle.admit(key, now)
    if due:
        event(logger, name, level, **fields, **({"suppressed": held} if held else {}))
    return due


class RateLimitedLog:
    """Event lines that come in floods (refused and failed connections): at
    most one per cause and ``interval``, each with the count of the ones held
    back. The cause is the line's ``reason``, a small vocabulary (a refusal
    reason, a TLS alert), never a peer: a flood from a thousand addresses costs
    the log what a flood from one does.

    The first line of a cause is written at once. Those that follow within
    ``interval`` are counted, and the next one written says ``suppressed=N``;
    ``flush``, called now and then, writes the count of a flood that ended,
    which no next line would carry. The caller passes the clock."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 level: int = logging.WARNING, max_causes: int = 1_000) -> None:
        self._logger = logger
        self._level = level
        self._throttle = Throttle(interval, max_causes)

    def event(self, name: str, reason: str, now: float, **fields: Any) -> bool:
        """Log ``name reason=<reason> <fields>``, with ``suppressed=N`` when
        N lines of this name and reason were held back since the last one;
        or hold it back. True when written."""
        return throttled_event(self._throttle, (name, reason), now, self._logger, name,
                               level=self._level, reason=reason, **fields)

    def holding(self) -> bool:
        """Whether lines are held back that no line has counted yet."""
        return self._throttle.holding()

    def flush(self, now: float) -> int:
        """Write ``name reason=<reason> suppressed=N`` for each cause whose
        held-back lines are ``interval`` old; how many lines were written."""
        due = self._throttle.overdue(now)
        for (name, reason), held in due:
            event(self._logger, name, self._level, reason=reason, suppressed=held)
        return len(due)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class _TextFormatter(logging.Formatter):
    """One record, one line: a control character in a message that did not
    come through ``event`` (a library's own line quoting a peer) is written
    as an escape. A traceback still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", record.message)
        return super().formatMessage(record)


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        payload.update(getattr(record, _FIELDS, None) or {"msg": record.getMessage()})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: str, fmt: str) -> None:
    """Send logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request as free text; the agent's sync logs one event instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
