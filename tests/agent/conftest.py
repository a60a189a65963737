"""Fixtures for the agent's integration tests: real agents, a command signer."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from epns import pki, topics
from epns.envelope import Command, CommandType, sign_command, target_agent
from tests.support.agents import AgentProcess, start_agent, write_agent_config
from tests.support.clients import agent_files, connect, tls_context

# A sync action that appends "reason wake-ids" to a file: what the route tests check.
RECORD_SYNC = ("import os, sys; open(sys.argv[1], 'a').write(os.environ['EPNS_SYNC_REASON'] "
               "+ ' ' + os.environ.get('EPNS_SYNC_WAKES', '') + '\\n')")


class SyncRecord:
    """The syncs an agent ran, as recorded by its command sync action."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[tuple[str, str]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        return [(line.split(" ")[0], line.partition(" ")[2]) for line in lines]

    def wait_for(self, reason: str, wakes: str | None = None, timeout: float = 10.0,
                 after: int = 0) -> int:
        """Wait for a sync with ``reason`` (and wake ids); return its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, (got, ids) in enumerate(self.entries()):
                if index >= after and got == reason and (wakes is None or wakes in ids):
                    return index
            time.sleep(0.05)
        raise AssertionError(f"no {reason} sync ({wakes}) after #{after}: {self.entries()}")


@pytest.fixture
def run_agent(tmp_path: Path, pki_dir: Path) -> Iterator[Callable[..., tuple[AgentProcess,
                                                                                   SyncRecord]]]:
    """Start a real agent; by default its sync runs RECORD_SYNC into a file."""
    started: list[AgentProcess] = []
    brokers: list[tuple[str, list[int]]] = []

    def run(agent_id: str, ports: list[int], env: dict[str, str] | None = None,
            **sections: dict[str, Any]) -> tuple[AgentProcess, SyncRecord]:
        record = SyncRecord(tmp_path / f"syncs-{agent_id}.txt")
        sync = {"action": "command",
                "command": [sys.executable, "-c", RECORD_SYNC, str(record.path)]}
        sync.update(sections.pop("sync", {}))
        config = write_agent_config(tmp_path / f"{agent_id}.toml", pki_dir, agent_id, ports,
                                    sync=sync, **sections)
        agent = start_agent(config, **(env or {}))
        started.append(agent)
        brokers.append((agent_id, ports))
        return agent, record

    yield run
    for agent in started:
        agent.stop()
    for agent_id, ports in brokers:
        _clear_presence(pki_dir, agent_id, ports)


def _clear_presence(pki_dir: Path, agent_id: str, ports: list[int]) -> None:
    """The session brokers outlive the test: drop its agents' retained presence,
    so tests that watch every agent's presence see only their own agents."""
    for port in ports:
        if not _answers_tls(pki_dir, port):
            continue  # a closed or black-holed port of a route test
        # Only the agent itself may publish its presence (the ACL).
        client = connect(port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id))
        client.publish(topics.agent_presence(agent_id), b"", retain=True)
        client.close()


def _answers_tls(pki_dir: Path, port: int) -> bool:
    context = tls_context(pki_dir, pki_dir / pki.SERVER_CERT, pki_dir / pki.SERVER_KEY)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                context.wrap_socket(raw, server_hostname="localhost"):
            return True
    except OSError:
        return False


@pytest.fixture
def sign(pki_dir: Path) -> Callable[..., bytes]:
    """Sign a command as the server would."""
    key = pki.load_signing_key(pki_dir / pki.SIGNING_KEY)

    def make(agent_id: str, kind: CommandType = CommandType.WAKE, ttl: float = 60.0,
             **fields: Any) -> bytes:
        now = time.time()
        command = Command(kind, fields.pop("target", target_agent(agent_id)),
                          issued_at=fields.pop("issued_at", now),
                          expires_at=fields.pop("expires_at", now + ttl), **fields)
        return sign_command(command, key)

    return make
