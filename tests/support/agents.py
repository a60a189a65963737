"""Real ``epns-agent`` processes, configured by a TOML file the test writes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from epns import pki
from tests.support.processes import ROOT, pump_stderr, stop_process, wait_for_line


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_agent_config(path: Path, pki_dir: Path, agent_id: str, ports: list[int],
                       **sections: dict[str, Any]) -> Path:
    """An agent.toml for ``agent_id`` against 127.0.0.1 ``ports``; ``sections``
    override or add keys, e.g. ``sync={"url": ...}``, ``proxy={"url": ...}``."""
    pair = pki.agent_pair(pki_dir, agent_id)
    tables: dict[str, dict[str, Any]] = {
        "identity": {"agent_id": agent_id, "cert": str(pair.cert), "key": str(pair.key)},
        "broker": {"host": "127.0.0.1", "ports": ports, "ca": str(pki_dir / pki.CA_CERT),
                   "server_public_key": str(pki_dir / pki.SIGNING_PUB)},
        "proxy": {"use_env": False},
        "timeouts": {"tcp_connect": 2.0, "proxy_connect": 3.0, "tls_handshake": 2.0,
                     "connack": 3.0},
        "reconnect": {"base": 0.5, "cap": 3.0, "stable_after": 5.0},
        "sync": {"interval": 3600.0, "timeout": 5.0},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = [f"state_dir = {_toml_value(str(path.parent / ('state-' + agent_id)))}"]
    for name, values in tables.items():
        lines.append(f"\n[{name}]")
        # None clears a setting: an empty string in TOML.
        lines += [f"{key} = {_toml_value('' if value is None else value)}"
                  for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    """A running agent; its log lines are collected as they come."""

    process: subprocess.Popen[str]
    config: Path
    lines: list[str] = field(default_factory=list)

    def log_contains(self, pattern: str, timeout: float = 10.0, after: int = 0) -> str:
        """Wait for a log line (from index ``after``) matching ``pattern``."""
        return wait_for_line(self.lines, pattern, timeout, after=after, what="agent")

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in list(self.lines) if regex.search(line))

    def status(self) -> tuple[int, str]:
        """``epns-agent status`` for this agent's config: (exit code, output)."""
        done = subprocess.run([sys.executable, "-m", "agent_push", "status", "--config",
                               str(self.config)], cwd=ROOT, capture_output=True, text=True,
                              timeout=30, env=_env(), check=False)
        return done.returncode, done.stdout

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.process, sig)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EPNS_") and k.lower() not in ("https_proxy", "no_proxy")}
    env.update(extra)
    return env


def start_agent(config: Path, cwd: Path = ROOT, **env: str) -> AgentProcess:
    """Start ``epns-agent run --config config`` in ``cwd``."""
    process = subprocess.Popen([sys.executable, "-m", "agent_push", "run", "--config",
                                str(config)], cwd=cwd, env=_env(**env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    agent = AgentProcess(process, config)
    threading.Thread(target=pump_stderr, args=(process, agent.lines), daemon=True).start()
    return agent
