"""Real agent processes (``python -m agent_push run``): their environment and
their configuration file, as ``agent-idle`` and ``wake-agents`` start them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def agent_env() -> dict[str, str]:
    """The environment without EPNS_* settings or proxy variables: the
    configuration file alone decides."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("EPNS_")
            and k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "all_proxy")}


def agent_command(config: Path) -> list[str]:
    """The agent, run by this interpreter on ``config``."""
    return [sys.executable, "-m", "agent_push", "run", "--config", str(config)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def write_agent_config(path: Path, state_dir: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """agent.toml: ``state_dir`` and ``tables`` (table -> key -> value); the
    agent's defaults for everything else."""
    lines = [f"state_dir = {_toml(str(state_dir))}"]
    for name, values in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
