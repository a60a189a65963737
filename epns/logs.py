"""Structured logging: one line per event, as text or JSON.

Call sites log an event name and fields: ``event(log, "refused", client=..)``.
The text form is ``event key=value ...``; the JSON form is one object a line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

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
    text = str(value)
    return json.dumps(text) if (" " in text or not text or '"' in text) else text


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
    """Send logs to stderr in the chosen format. amqtt's own chatter is kept to
    warnings: it logs every connection at INFO."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("amqtt").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("transitions").setLevel(logging.WARNING)
    # httpx logs every request as free text; the agent's sync logs one event instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
