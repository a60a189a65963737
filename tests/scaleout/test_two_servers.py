"""Two epns-server processes on one PostgreSQL (issue 7, docs/scale-out.md).

Real processes on 127.0.0.1: one throwaway PostgreSQL cluster, an external
broker (``python -m broker``, or Mosquitto for ``$share``), two servers and
real agents. Only configuration differs from a single server: ``[cluster]``,
and in shared mode a second server certificate and its ACL lines.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from epns import pki
from tests.server.conftest import Stack
from tests.support.postgres import BIN
from tests.support.processes import ROOT, BrokerProcess, start_epns, start_mosquitto
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.postgres

ELECT_INTERVAL = 0.5
ADMIN, PASSWORD = "admin", "two servers, one database"
SECOND = "epns-server-b"  # the second replica's certificate name in shared mode


def sql(url: str, query: str) -> list[list[str]]:
    """Rows of ``query`` on the test's database, read with psql."""
    port = re.search(r":(\d+)/", url)
    assert port is not None
    done = subprocess.run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", port.group(1), "-U",
                           "postgres", "-d", "epns", "-AtF", "\t", "-c", query],
                          capture_output=True, text=True, timeout=30, check=True)
    return [line.split("\t") for line in done.stdout.splitlines() if line]


@dataclass
class Pair:
    """A broker, servers A and B on one database, and the agents (in ``stack``,
    whose ``server`` is the one agents sync with)."""

    stack: Stack
    a: ServerProcess
    b: ServerProcess
    url: str

    def leader(self, timeout: float = 15.0) -> tuple[ServerProcess, ServerProcess]:
        """(leader, follower), as their health says once one leads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = {_health(s)["role"]: s for s in (self.a, self.b)
                     if s.process.poll() is None}
            if "leader" in roles:
                follower = self.b if roles["leader"] is self.a else self.a
                return roles["leader"], follower
            time.sleep(0.1)
        raise AssertionError("no server leads")


def _health(server: ServerProcess) -> dict[str, Any]:
    with server.client() as client:
        answer = client.get("/api/v1/health")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _wake(server: ServerProcess, token: str, agent_id: str) -> str:
    with server.client(token) as api:
        answer = api.post("/api/v1/wakeups", json={"agents": [agent_id]})
    assert answer.status_code == 202, answer.text
    wakeup_id: str = answer.json()["id"]
    return wakeup_id


def _wait_state(server: ServerProcess, token: str, wakeup_id: str, state: str,
                timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with server.client(token) as api:
            seen = api.get(f"/api/v1/wakeups/{wakeup_id}").json()
        if seen.get("counts", {}).get(state, 0) >= 1:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{server.url}: wake-up {wakeup_id} never {state}: {seen}")


def _second_identity(certs: Path) -> dict[str, str]:
    """B's own server certificate: brokers that take the client id from the
    certificate (Mosquitto's use_username_as_clientid, the epns broker's
    check) need one per replica that connects at once."""
    out = pki.Pair(certs / f"{SECOND}.crt", certs / f"{SECOND}.key")
    pki.create_client_cert(pki.Pair(certs / pki.CA_CERT, certs / pki.CA_KEY), out, SECOND,
                           server=True)
    return {"mqtt__cert": str(out.cert), "mqtt__key": str(out.key), "mqtt__client_id": SECOND}


def _mosquitto_acl() -> str:
    """The shipped ACL, with the second replica allowed what the first is."""
    shipped = (ROOT / "docker/mosquitto/acl").read_text()
    server_block = shipped[shipped.index("user epns-server"):]
    return shipped + "\n" + server_block.replace("user epns-server", f"user {SECOND}", 1)


@pytest.fixture
def make_pair(tmp_path: Path, postgres_url: str) -> Iterator[Callable[[str], Pair]]:
    """``make_pair("leader" | "shared")``: shared runs on Mosquitto."""
    made: list[Pair] = []
    brokers: list[BrokerProcess] = []

    def make(mode: str) -> Pair:
        certs = tmp_path / "pki"
        pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
        broker = (start_mosquitto(certs, tmp_path, acl=_mosquitto_acl()) if mode == "shared"
                  else start_epns(certs))
        brokers.append(broker)
        common = {"database__url": postgres_url, "cluster__mode": mode,
                  "cluster__elect_interval": str(ELECT_INTERVAL),
                  # One console secret for both, so a session works on either.
                  "console__secrets_file": str(tmp_path / "secrets.json")}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        a = start_server(certs, tmp_path / "a", broker.port, **common)
        second = _second_identity(certs) if mode == "shared" else {}
        b = start_server(certs, tmp_path / "b", broker.port, **common, **second)
        token = a.api_token()
        pair = Pair(Stack(certs, tmp_path / "a", broker, a, token), a, b, postgres_url)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        for agent in pair.stack.agents:
            agent.stop()
        for server in (pair.a, pair.b):
            server.stop()
    for broker in brokers:
        broker.stop()


def _applied_once(pair: Pair, agent_id: str, wakeups: int) -> None:
    """Each broker message was applied by one replica: one claim per message,
    one 'delivered' line per wake-up, one 'online' line per connection."""
    claims = sql(pair.url, "SELECT topic, handled_by FROM handled_events")
    assert any(topic.endswith(f"/{agent_id}/evt") for topic, _ in claims), claims
    kinds = [row[0] for row in sql(
        pair.url, f"SELECT kind FROM agent_events WHERE agent_id = '{agent_id}'")]
    assert kinds.count("wake_delivered") == wakeups, kinds
    assert kinds.count("online") == 1, kinds


def test_leader_mode_a_followers_wakeup_is_satisfied_and_events_are_applied_once(
        make_pair: Callable[[str], Pair]) -> None:
    pair = make_pair("leader")
    leader, follower = pair.leader()
    assert _health(leader)["broker"] is True
    # Only the leader holds a broker session; the follower hands commands over.
    assert not any("broker_link_up" in line for line in follower.lines)
    pair.stack.server = follower  # the agent syncs with the follower
    agent = pair.stack.start_agent("a1")
    agent.log_contains(r"sync_done .*reason=connect", timeout=20)
    first = _wake(follower, pair.stack.token, "a1")
    for server in (follower, leader):
        _wait_state(server, pair.stack.token, first, "satisfied")
    second = _wake(leader, pair.stack.token, "a1")
    for server in (leader, follower):
        _wait_state(server, pair.stack.token, second, "satisfied")
    _applied_once(pair, "a1", wakeups=2)
    leader_pid = str(leader.process.pid)
    handlers = {by.rsplit(":", 1)[1] for _, by in
                sql(pair.url, "SELECT topic, handled_by FROM handled_events")}
    assert handlers == {leader_pid}


def test_shared_mode_on_mosquitto_splits_the_events_and_applies_each_once(
        make_pair: Callable[[str], Pair]) -> None:
    pair = make_pair("shared")
    for server in (pair.a, pair.b):
        server.log_contains(r"broker_link_up", timeout=15)
    agents = [f"s{n}" for n in range(4)]
    for agent_id in agents:
        pair.stack.start_agent(agent_id).log_contains(r"sync_done .*reason=connect",
                                                      timeout=20)
    wakeups = [_wake(pair.a if n % 2 else pair.b, pair.stack.token, agent_id)
               for n, agent_id in enumerate(agents)]
    for wakeup_id in wakeups:
        for server in (pair.a, pair.b):
            _wait_state(server, pair.stack.token, wakeup_id, "satisfied")
    for agent_id in agents:
        _applied_once(pair, agent_id, wakeups=1)
    # The broker gave each replica a share of the events (round robin).
    evt_handlers = {by for topic, by in sql(pair.url,
                                            "SELECT topic, handled_by FROM handled_events")
                    if topic.endswith("/evt")}
    assert len(evt_handlers) == 2, evt_handlers


def test_leader_killed_the_follower_takes_over_and_serves_a_wakeup(
        make_pair: Callable[[str], Pair]) -> None:
    pair = make_pair("leader")
    leader, follower = pair.leader()
    pair.stack.server = follower
    agent = pair.stack.start_agent("f1")
    agent.log_contains(r"sync_done .*reason=connect", timeout=20)
    mark = len(follower.lines)
    killed_at = time.monotonic()
    leader.stop(signal.SIGKILL)
    # Requested at once: staged by a follower while nobody leads.
    wakeup_id = _wake(follower, pair.stack.token, "f1")
    follower.log_contains(r"cluster_leading", timeout=15, after=mark)
    took_over = time.monotonic() - killed_at
    follower.log_contains(r"broker_link_up", timeout=15, after=mark)
    _wait_state(follower, pair.stack.token, wakeup_id, "satisfied")
    assert _health(follower)["role"] == "leader"
    assert took_over < 10 * ELECT_INTERVAL + 5, took_over
    print(f"takeover after SIGKILL: {took_over:.2f} s")


def _console_login(client: httpx.Client) -> None:
    page = client.get("/console/login")
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    answer = client.post("/console/login", data={"username": ADMIN, "password": PASSWORD,
                                                 "csrf": csrf.group(1), "next": "/console/agents"})
    assert answer.status_code == 303, answer.text


def test_both_serve_the_console_and_the_api_with_live_notices_from_the_other(
        make_pair: Callable[[str], Pair]) -> None:
    pair = make_pair("leader")
    leader, follower = pair.leader()
    pair.a.cli("admin", "password", ADMIN, env={"EPNS_ADMIN_PASSWORD": PASSWORD})
    for server in (pair.a, pair.b):
        with server.client(pair.stack.token) as api:
            assert api.get("/api/v1/agents").status_code == 200
        with server.client() as client:
            login = client.get("/console/login")
        assert login.status_code == 200
        assert 'name="password"' in login.text
    pair.stack.server = leader
    pair.stack.start_agent("c1").log_contains(r"sync_done .*reason=connect", timeout=20)
    # The follower's console hears of a wake-up made and served through the leader.
    seen: list[dict[str, Any]] = []
    with follower.client(follow_redirects=False) as console:
        _console_login(console)
        assert console.get("/console/agents").status_code == 200
        # What its pages load: online, as the leader's broker session says.
        shown = console.get("/api/v1/agents/c1")
        assert shown.status_code == 200, shown.text
        assert shown.json()["presence"] == "online", shown.json()
        with console.stream("GET", "/console/events",
                            timeout=httpx.Timeout(15, read=10)) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")  # subscribed
            wakeup_id = _wake(leader, pair.stack.token, "c1")
            _wait_state(leader, pair.stack.token, wakeup_id, "satisfied")
            for line in lines:
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                if {"kind": "wakeup", "id": wakeup_id} in seen and {
                        "kind": "agent", "id": "c1"} in seen:
                    break
    assert {"kind": "wakeup", "id": wakeup_id} in seen, seen


def test_two_servers_starting_together_on_an_empty_database_both_come_up(
        tmp_path: Path, postgres_url: str) -> None:
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    broker = start_epns(certs)
    started: dict[str, ServerProcess] = {}
    failed: list[BaseException] = []

    def start(name: str) -> None:
        (tmp_path / name).mkdir()
        try:
            started[name] = start_server(certs, tmp_path / name, broker.port,
                                         database__url=postgres_url, cluster__mode="leader",
                                         cluster__elect_interval=str(ELECT_INTERVAL))
        except RuntimeError as exc:
            failed.append(exc)

    threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failed, failed
        # One migrated and one made the first admin; the other found both done.
        migrated = [s for s in started.values()
                    if any("Running upgrade" in line for line in s.lines)]
        told = [s for s in started.values()
                if any("password in " in line for line in s.lines)]
        assert len(migrated) == 1
        assert len(told) == 1
        assert sorted(_health(s)["role"] for s in started.values()) == ["follower", "leader"]
    finally:
        for server in started.values():
            server.stop()
        broker.stop()
