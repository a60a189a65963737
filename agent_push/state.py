"""The agent's state directory: what survives a restart, and what ``status`` reads.

- ``route``: the name of the last route that worked, tried first next time;
- ``hints.json``: keep-alive and sync-interval hints the server sent;
- ``heartbeat.json``: the ping interval learnt per route and network
  (``epns.heartbeat``);
- ``status.json``: the running agent's view of itself, rewritten on every
  change, for ``epns-agent status``.

Files are replaced atomically (write, then rename), so a reader never sees a
half-written file and a crash never leaves one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent_push import platform
from epns.errors import ConfigError

ROUTE = "route"
HINTS = "hints.json"
HEARTBEAT = "heartbeat.json"
STATUS = "status.json"


class StateDir:
    """Reads and writes the agent's small state files."""

    def __init__(self, path: Path) -> None:
        try:
            platform.private_directory(path)
        except OSError as exc:
            raise ConfigError(f"cannot create the state directory {path}: {exc}") from exc
        self.path = path

    def last_route(self) -> str | None:
        """The route that worked last, if any."""
        try:
            return (self.path / ROUTE).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def remember_route(self, name: str) -> None:
        """Keep ``name`` as the route to try first."""
        self._replace(ROUTE, name + "\n")

    def hints(self) -> dict[str, Any]:
        """The server's last hints; empty when none or unreadable."""
        return read_json(self.path / HINTS)

    def save_hints(self, hints: Mapping[str, Any]) -> None:
        """Keep the server's hints across restarts."""
        self._replace(HINTS, json.dumps(dict(hints), sort_keys=True))

    def heartbeats(self) -> dict[str, Any]:
        """The learnt ping intervals, by network key; empty when none."""
        return read_json(self.path / HEARTBEAT)

    def save_heartbeats(self, records: Mapping[str, Any]) -> None:
        """Keep the learnt ping intervals across restarts."""
        self._replace(HEARTBEAT, json.dumps(dict(records), sort_keys=True))

    def write_status(self, status: Mapping[str, Any]) -> None:
        """Publish the agent's view of itself for ``epns-agent status``."""
        self._replace(STATUS, json.dumps(dict(status), sort_keys=True, indent=1))

    def _replace(self, name: str, text: str) -> None:
        temporary = self.path / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path / name)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; empty when missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
