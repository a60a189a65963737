"""A whole stack per test: its own PKI, a real epns broker, a real server,
and real agents created through the server's API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from epns import pki
from server_push.store.models import Base
from tests.support.agents import AgentProcess, start_agent, write_agent_config
from tests.support.processes import BrokerProcess, start_epns, start_mosquitto
from tests.support.server import ServerProcess, request_wakeup, start_server


@dataclass
class Stack:
    """A broker, a server and the agents of one test."""

    pki: Path
    work: Path
    broker: BrokerProcess
    server: ServerProcess
    token: str
    agents: list[AgentProcess] = field(default_factory=list)
    server_overrides: dict[str, str] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        """An API client with the test's bearer token."""
        return self.server.client(self.token)

    def create_agent(self, agent_id: str, groups: tuple[str, ...] = (),
                     auth: str = "certificate") -> Path:
        """Create the agent through the API; returns its bundle directory."""
        with self.api() as api:
            answer = api.post("/api/v1/agents", json={"id": agent_id, "groups": list(groups),
                                                      "auth": auth})
        assert answer.status_code == 201, answer.text
        bundle = self.work / "agents" / agent_id
        bundle.mkdir(parents=True, exist_ok=True)
        for name, text in answer.json()["files"].items():
            (bundle / name).write_text(text)
        return bundle

    def start_agent(self, agent_id: str, groups: tuple[str, ...] = (),
                    auth: str = "certificate", create: bool = True,
                    ports: list[int] | None = None,
                    **sections: dict[str, Any]) -> AgentProcess:
        """Create (unless told not to) and start an agent that syncs over HTTP
        with this server, with the test suite's short timeouts; on the
        broker's primary port unless ``ports`` are given."""
        bundle = self.create_agent(agent_id, groups, auth) if create else (
            self.work / "agents" / agent_id)
        identity: dict[str, Any] = {"groups": list(groups)}
        if auth == "certificate":
            identity.update(cert=str(bundle / "agent.crt"), key=str(bundle / "agent.key"))
        else:
            identity.update(cert=None, key=None, token_file=str(bundle / "agent.token"))
        sync = {"action": "http", "url": self.server.url, "fetch": True,
                "ca": str(self.pki / pki.CA_CERT), "interval": 3600.0, "timeout": 5.0}
        sync.update(sections.pop("sync", {}))
        config = write_agent_config(self.work / f"{agent_id}.toml", self.pki, agent_id,
                                    ports or [self.broker.port], identity=identity, sync=sync,
                                    **sections)
        agent = start_agent(config)
        self.agents.append(agent)
        return agent

    def stop(self) -> None:
        """Stop its agents, then the server, then the broker."""
        for agent in self.agents:
            agent.stop()
        self.server.stop()
        self.broker.stop()

    def restart_server(self) -> None:
        """Stop the server and start it again on the same port and database."""
        port = int(self.server.url.rsplit(":", 1)[1])
        self.server.stop()
        self.server = start_server(self.pki, self.work, self.broker.port, http_port=port,
                                   **self.server_overrides)

    def restart_broker(self) -> None:
        """Stop the broker and start it again on the same port (``stop_broker``
        and ``start_broker`` do the halves)."""
        self.stop_broker()
        self.start_broker()

    def stop_broker(self) -> None:
        self.broker.stop()

    def start_broker(self) -> None:
        assert self.broker.kind == "epns"
        self.broker = start_epns(self.pki, listeners__primary__port=str(self.broker.port),
                                 listeners__fallback__http_upstream=str(self.work / "front.sock"))

    def wake(self, agent_id: str) -> str:
        """Request a wake-up of one agent through the API; its id."""
        with self.api() as api:
            return request_wakeup(api, agent_id)

    def wakeup(self, wakeup_id: str) -> dict[str, Any]:
        with self.api() as api:
            answer = api.get(f"/api/v1/wakeups/{wakeup_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def wait_wakeup(self, wakeup_id: str, state: str, count: int = 1,
                    timeout: float = 15.0) -> dict[str, Any]:
        """Poll the API until ``count`` targets of the wake-up are in ``state``."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = self.wakeup(wakeup_id)
            if seen["counts"].get(state, 0) >= count:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"wake-up {wakeup_id} has not {count} {state} targets: {seen}")

    def enrol_token(self, status: int = 201, **body: Any) -> dict[str, Any]:
        """``POST /api/v1/enrol-tokens`` with ``body``; its answer, which must
        come with ``status``."""
        with self.api() as api:
            answer = api.post("/api/v1/enrol-tokens", json=body)
        assert answer.status_code == status, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def insert_rows(self, *tables: tuple[type[Base], list[dict[str, Any]]]) -> None:
        """Write rows straight into the server's database, in one
        transaction: fleets of thousands made in a second, not by enrolling."""
        async def write() -> None:
            engine = create_async_engine(self.server.env["EPNS_SERVER_DATABASE__URL"])
            try:
                async with engine.begin() as connection:
                    for model, rows in tables:
                        await connection.execute(insert(model), rows)
            finally:
                await engine.dispose()

        asyncio.run(write())

    def wait_agent(self, agent_id: str, presence: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll the API until the agent shows ``presence``."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with self.api() as api:
                answer = api.get(f"/api/v1/agents/{agent_id}")
            if answer.status_code == 200:
                seen = answer.json()
                if seen["presence"] == presence:
                    return seen
            time.sleep(0.1)
        raise AssertionError(f"agent {agent_id} is not {presence}: {seen}")


def _make_stack(tmp_path: Path, broker_kind: str, overrides: dict[str, str]) -> Stack:
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    work = tmp_path / "server"
    work.mkdir()
    # The broker's 443 relays HTTPS to this server's front socket, as in the
    # all-in-one (server_push.embedded).
    broker = (start_epns(certs, listeners__fallback__http_upstream=str(work / "front.sock"))
              if broker_kind == "epns" else start_mosquitto(certs, tmp_path))
    server = start_server(certs, work, broker.port, **overrides)
    token = server.api_token()
    return Stack(certs, work, broker, server, token, server_overrides=overrides)


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build a stack: ``make_stack(broker="epns"|"mosquitto", **server_overrides)``."""
    stacks: list[Stack] = []

    def make(broker: str = "epns", **overrides: str) -> Stack:
        stack = _make_stack(tmp_path / f"stack{len(stacks)}", broker, overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """The default stack: the epns broker and a server."""
    return make_stack()
