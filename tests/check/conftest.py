"""Fixtures of the epns-check tests: the check run in-process with --json, agent
configs with the suite's short timeouts, and a whole stack (broker + server)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from epns import pki
from epns_check.cli import main
from tests.support.agents import write_agent_config
from tests.support.processes import (
    BrokerProcess,
    broker_env,
    free_port,
    start_epns,
    start_mosquitto,
)
from tests.support.server import ServerProcess, start_server


@dataclass
class Checked:
    """What one run of epns-check answered."""

    code: int
    report: dict[str, Any]

    def rows(self, step: str) -> list[dict[str, Any]]:
        """Every line of ``step``, in report order."""
        return [row for row in self.report["steps"] if row["step"] == step]

    def row(self, step: str, subject: str | None = None) -> dict[str, Any]:
        """The one line of ``step`` (about ``subject``)."""
        found = [row for row in self.rows(step) if subject in (None, row["subject"])]
        assert len(found) == 1, f"{len(found)} {step} lines for {subject}:\n{self.text()}"
        return found[0]

    @property
    def verdict(self) -> dict[str, Any]:
        return dict(self.report["verdict"])

    def text(self) -> str:
        """The report, readable in an assertion message."""
        return json.dumps(self.report, indent=1)


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
          ) -> Callable[..., Checked]:
    """Run ``epns-check ARGS --json`` in this process, in a clean environment."""
    for name in list(os.environ):
        if name.startswith("EPNS_") or name.lower() in ("https_proxy", "no_proxy"):
            monkeypatch.delenv(name)

    def run(*args: object) -> Checked:
        capsys.readouterr()
        code = main([*map(str, args), "--json"])
        return Checked(code, json.loads(capsys.readouterr().out))

    return run


@pytest.fixture
def agent_toml(tmp_path: Path, pki_dir: Path, agent_ids: Callable[[int], list[str]]
               ) -> Callable[..., Path]:
    """An agent.toml for a fresh pool agent against 127.0.0.1 ``ports``."""

    def write(ports: list[int], agent_id: str | None = None, **sections: dict[str, Any]) -> Path:
        name = agent_id or agent_ids(1)[0]
        return write_agent_config(tmp_path / f"{name}.toml", pki_dir, name, ports, **sections)

    return write


@dataclass
class CheckStack:
    """A broker on fixed ports, a server, an API token."""

    pki: Path
    work: Path
    broker: BrokerProcess
    server: ServerProcess
    token: str
    broker_env: dict[str, str]

    def bundle(self, agent_id: str, auth: str = "certificate") -> Path:
        """Create the agent through the API; the agent.toml of its bundle."""
        with self.server.client(self.token) as api:
            answer = api.post("/api/v1/agents", json={"id": agent_id, "auth": auth})
        assert answer.status_code == 201, answer.text
        bundle = self.work / "agents" / agent_id
        bundle.mkdir(parents=True)
        for name, text in answer.json()["files"].items():
            (bundle / name).write_text(text)
        return bundle / "agent.toml"

    def stop(self) -> None:
        self.server.stop()
        self.broker.stop()


def build_stack(root: Path, mosquitto_acl: str | None = None) -> CheckStack:
    """Its own PKI, a broker whose ports (metrics too) are known for --server,
    a server, an API token. With ``mosquitto_acl`` the broker is Mosquitto
    with that ACL file."""
    certs = root / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    work = root / "server"
    work.mkdir()
    ports = {"listeners__primary__port": str(free_port()),
             "listeners__fallback__port": str(free_port()), "metrics__port": str(free_port())}
    broker = (start_epns(certs, **ports) if mosquitto_acl is None
              else start_mosquitto(certs, root, acl=mosquitto_acl))
    try:
        server = start_server(certs, work, broker.port)
    except RuntimeError:
        broker.stop()
        raise
    token = server.api_token("epns-check")
    env = {k: v for k, v in broker_env(certs, **ports).items() if k.startswith("EPNS_BROKER_")}
    return CheckStack(certs, work, broker, server, token, env)


@pytest.fixture(scope="session")
def check_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckStack]:
    """One stack for the tests that need the server."""
    stack = build_stack(tmp_path_factory.mktemp("check-stack"))
    yield stack
    stack.stop()
