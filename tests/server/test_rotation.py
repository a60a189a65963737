"""Rotation of the command-signing key and of the fleet CA with agents
connected (issue 16, item 6).

Real processes: the epns broker, the server, a certificate agent and a token
agent pinned to the key and CA of their bundle, wake-ups flowing while
``epns-server rotate signing-key begin|finish`` or ``rotate ca
begin|switch|finish`` run: every command verifies, every wake-up is
satisfied, connections stay (but for the certificate agent's one move to its
renewed certificate). An agent stopped before ``begin`` and started after
``finish`` fails with the way back, and follows it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from epns import pki
from epns.envelope import key_id
from tests.server.conftest import Stack
from tests.support.agents import AgentProcess, start_agent
from tests.support.processes import ROOT, start_epns, wait_until
from tests.support.server import start_server

pytestmark = pytest.mark.timeout(240)

AGENTS = ("rot-cert", "rot-token")
# Seconds to wait for what a rotation step sets going (commands, renewals).
WAIT = 30.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The stack of tests/server/conftest.py, but a broker that forgets an
    offline agent's session after a second: what it queued while an agent
    slept through a whole rotation (weeks) would have expired long before."""
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    work = tmp_path / "server"
    work.mkdir()
    broker = start_epns(certs, listeners__fallback__http_upstream=str(work / "front.sock"),
                        limits__session_expiry="1")
    overrides = {"pki__rotation_check_interval": "0.5", "wakeups__per_minute": "6000",
                 "wakeups__burst": "1000", "budgets__syncs_per_minute": "6000",
                 "budgets__syncs_burst": "1000", "budgets__events_per_minute": "6000",
                 "budgets__events_burst": "1000"}
    server = start_server(certs, work, broker.port, **overrides)
    token = server.api_token()
    made = Stack(certs, work, broker, server, token, server_overrides=overrides)
    yield made
    made.stop()


def _start(stack: Stack, agent_id: str, auth: str = "certificate") -> AgentProcess:
    """An agent pinned to its bundle's server.pub, as a deployed one is (the
    test PKI's signing.pub changes under a rotation)."""
    bundle = stack.create_agent(agent_id, auth=auth)
    return stack.start_agent(agent_id, auth=auth, create=False,
                             broker={"server_public_key": str(bundle / "server.pub")})


def _current_key(stack: Stack) -> str:
    return key_id(pki.load_public_key(stack.pki / pki.SIGNING_PUB))


class _Waker:
    """Wakes both agents, one after the other, until stopped; keeps the ids."""

    def __init__(self, stack: Stack, agent_ids: tuple[str, ...] = AGENTS) -> None:
        self.stack = stack
        self.agent_ids = agent_ids
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and len(self.ids) < 400:
                for agent_id in self.agent_ids:
                    self.ids.append(self.stack.wake(agent_id))
                self._stop.wait(0.3)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> _Waker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert self.error is None, self.error


def _trust_reset_ca(config: Path, ca: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "agent_push", "trust", "reset", "--ca",
                           str(ca), "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("EPNS_") and k.lower() not in ("https_proxy", "no_proxy")}


def _trust_reset(config: Path, key: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "agent_push", "trust", "reset", "--key",
                           str(key), "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_signing_key_rotation_with_agents_connected(stack: Stack) -> None:
    old = _current_key(stack)
    # Stopped before begin, started after finish.
    sleeper = _start(stack, "rot-sleeper")
    sleeper.log_contains(r"sync_done .*reason=connect")
    sleeper.stop()
    stack.broker.log_contains(r"session_expired .*rot-sleeper")
    agents = {agent_id: _start(stack, agent_id, "certificate" if "cert" in agent_id
                               else "token") for agent_id in AGENTS}
    for agent in agents.values():
        agent.log_contains(r"sync_done .*reason=connect")

    with _Waker(stack) as waker:
        wait_until(lambda: len(waker.ids) >= 4, "wake-ups before the rotation", WAIT)
        # The overlap is what the agents online need to learn the next key
        # (the refusal to finish before it ends: tests/server/test_rotation_files.py).
        out = stack.server.cli("rotate", "signing-key", "begin", "--overlap", "0")
        assert "trust serial 1" in out
        new = re.search(r"key (\w+): next", out)
        assert new is not None, out
        # By the trust command, or by a sync reply if a sync came first.
        for agent in agents.values():
            agent.log_contains(r"trust_updated .*serial=1", timeout=30)
        count = len(waker.ids)
        stack.server.cli("rotate", "signing-key", "finish")
        assert _current_key(stack) == new[1]
        for agent in agents.values():
            agent.log_contains(r"trust_updated .*serial=2", timeout=30)
        stack.server.log_contains(r"trust_loaded serial=2")
        wait_until(lambda: len(waker.ids) >= count + 6, "wake-ups after the rotation", WAIT)

    for agent_id in AGENTS:
        for wakeup_id in waker.ids[AGENTS.index(agent_id)::2]:
            stack.wait_wakeup(wakeup_id, "satisfied")
    for agent_id, agent in agents.items():
        # Both announcements came as signed commands too (the connected path).
        wait_until(lambda agent=agent: agent.count(r"command_accepted .*type=trust") >= 2,
                   f"{agent_id}'s trust commands", WAIT)
        assert agent.count("command_rejected") == 0, agent_id
        # One connection from start to end: no drop, no reconnect.
        assert agent.count(r"\bconnected route=") == 1, agent_id
        assert agent.count(r"\bdisconnected\b") == 0, agent_id
        signed_new = [line for line in agent.lines
                      if "command_accepted" in line and "type=wake" in line]
        assert len(signed_new) == len(waker.ids) // 2, agent_id
        code, status = agent.status()
        assert code == 0, status
        assert f"{new[1]} (current)" in status
        assert f"{old} (retiring)" in status

    # A token signed by the old key still logs in (until it would have expired).
    token_agent = agents["rot-token"]
    token_agent.stop()
    restarted = start_agent(token_agent.config)
    stack.agents.append(restarted)
    restarted.log_contains(r"sync_done .*reason=connect")
    wakeup_id = stack.wake("rot-token")
    stack.wait_wakeup(wakeup_id, "satisfied")

    # The sleeper missed the whole rotation: it refuses, and says what to do.
    sleeper = start_agent(sleeper.config)
    stack.agents.append(sleeper)
    line = sleeper.log_contains(r"trust_rejected .*UnknownSigner", timeout=20)
    assert f"signed by key {new[1]}" in line
    assert "epns-agent trust reset" in line
    stack.wake("rot-sleeper")
    line = sleeper.log_contains(r"command_rejected .*UnknownSigner")
    assert "epns-agent trust reset --key" in line
    _, status = sleeper.status()
    assert "TRUST PROBLEM: " in status
    assert "docs/rotation.md" in status
    sleeper.stop()
    # epns-check names the case and the way back.
    checked = subprocess.run([sys.executable, "-m", "epns_check", "--config",
                              str(sleeper.config), "--api-token", stack.token, "--json"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env=_clean_env(), check=False)
    e2e = [row for row in json.loads(checked.stdout)["steps"] if row["step"] == "e2e"]
    assert len(e2e) == 1, checked.stdout
    assert e2e[0]["status"] == "FAIL"
    assert f"is signed by key {new[1]}, which this agent does not know" in e2e[0]["detail"]
    assert "epns-agent trust reset --key" in e2e[0]["hint"]
    # The documented way back: the server's current signing.pub, by hand.
    said = _trust_reset(sleeper.config, stack.pki / pki.SIGNING_PUB)
    assert f"pins key {new[1]}" in said
    recovered = start_agent(sleeper.config)
    stack.agents.append(recovered)
    recovered.log_contains(r"sync_done .*reason=connect")
    wakeup_id = stack.wake("rot-sleeper")
    stack.wait_wakeup(wakeup_id, "satisfied")
    assert recovered.count("command_rejected") == 0
    recovered.log_contains(r"trust_updated source=\"sync reply\" serial=2")


def _start_pinned(stack: Stack, agent_id: str, auth: str = "certificate") -> AgentProcess:
    """An agent that trusts the CA of its bundle, as a deployed one does (the
    test PKI's ca.crt changes under a CA rotation)."""
    bundle = stack.create_agent(agent_id, auth=auth)
    return stack.start_agent(agent_id, auth=auth, create=False,
                             broker={"server_public_key": str(bundle / "server.pub"),
                                     "ca": str(bundle / "ca.crt")},
                             sync={"ca": str(bundle / "ca.crt")})


CA_AGENTS = ("ca-cert", "ca-token")


def test_ca_rotation_with_agents_connected(stack: Stack) -> None:
    # A token agent: once back, a certificate agent would need a certificate
    # from the new CA too, that is enrolling again (docs/rotation.md).
    sleeper = _start_pinned(stack, "ca-sleeper", "token")
    sleeper.log_contains(r"sync_done .*reason=connect")
    sleeper.stop()
    stack.broker.log_contains(r"session_expired .*ca-sleeper")
    agents = {agent_id: _start_pinned(stack, agent_id, "certificate" if "cert" in agent_id
                                      else "token") for agent_id in CA_AGENTS}
    for agent in agents.values():
        agent.log_contains(r"sync_done .*reason=connect")
    old_ca = pki.load_certificate(stack.pki / pki.CA_CERT).subject.rfc4514_string()

    with _Waker(stack, CA_AGENTS) as waker:
        wait_until(lambda: len(waker.ids) >= 4, "wake-ups before the rotation", WAIT)
        out = stack.server.cli("rotate", "ca", "begin", "--overlap", "0")
        assert "CA " in out
        for agent in agents.values():
            agent.log_contains(r"trust_updated .*serial=1 .*:next", timeout=30)
        stack.broker.log_contains(r"tls_reloaded ", timeout=10)
        stack.server.cli("rotate", "ca", "switch")
        new_ca = pki.load_certificate(stack.pki / pki.CA_CERT).subject.rfc4514_string()
        assert new_ca != old_ca
        # The certificate agent renews from the new CA; the token agent has
        # nothing to renew.
        cert_agent = agents["ca-cert"]
        cert_agent.log_contains(r"renewal_requested reason=", timeout=30)
        cert_agent.log_contains(r"identity_renewed ", timeout=30)
        wait_until(lambda: "no agent holds a certificate from the old CA" in stack.server.cli(
            "rotate", "ca", "status"), "no agent left on the old CA", WAIT)
        count = len(waker.ids)
        stack.server.cli("rotate", "ca", "finish")
        for agent in agents.values():
            agent.log_contains(r"trust_updated .*serial=3", timeout=30)
        wait_until(lambda: len(waker.ids) >= count + 6, "wake-ups after the rotation", WAIT)

    for index in range(len(CA_AGENTS)):
        for wakeup_id in waker.ids[index::2]:
            stack.wait_wakeup(wakeup_id, "satisfied")
    token_agent, cert_agent = agents["ca-token"], agents["ca-cert"]
    for agent in agents.values():
        assert agent.count("command_rejected") == 0
    # The token agent's connection never moved; the certificate agent's moved
    # once, on purpose, to its renewed certificate (DISCONNECT, then at once
    # back on its persistent session).
    assert token_agent.count(r"\bconnected route=") == 1
    assert cert_agent.count(r"\bconnected route=") == 2
    assert cert_agent.count(r"disconnected .*reason=\"moving to the renewed identity\"") == 1
    issuer = pki.load_certificate(stack.work / "agents" / "ca-cert" / "agent.crt").issuer
    assert issuer.rfc4514_string() == new_ca
    _, status = token_agent.status()
    assert re.search(r"fleet CAs \(SHA-256\): \w{16} \(current\)$", status, re.MULTILINE), status

    # Both come back after a restart: they trust the new CA alone now.
    for agent_id, agent in agents.items():
        agent.stop()
        again = start_agent(agent.config)
        stack.agents.append(again)
        again.log_contains(r"sync_done .*reason=connect")
        stack.wait_wakeup(stack.wake(agent_id), "satisfied")

    # The sleeper trusts the old CA alone: the broker's new certificate does
    # not verify, and it says what to do.
    sleeper = start_agent(sleeper.config)
    stack.agents.append(sleeper)
    line = sleeper.log_contains(r"did not verify", timeout=20)
    assert "the fleet CA was rotated while this agent was offline" in line
    assert "epns-agent trust reset --ca" in line
    sleeper.stop()
    # epns-check names the case too.
    checked = subprocess.run([sys.executable, "-m", "epns_check", "--config",
                              str(sleeper.config), "--json"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, env=_clean_env(), check=False)
    rows = [row for row in json.loads(checked.stdout)["steps"]
            if "the fleet CA was rotated while this agent was offline" in row["detail"]]
    assert rows, checked.stdout
    assert "epns-agent trust reset --ca" in rows[0]["hint"]
    said = _trust_reset_ca(sleeper.config, stack.pki / pki.CA_CERT)
    assert "now holds" in said
    recovered = start_agent(sleeper.config)
    stack.agents.append(recovered)
    recovered.log_contains(r"sync_done .*reason=connect")
    stack.wait_wakeup(stack.wake("ca-sleeper"), "satisfied")
    recovered.log_contains(r"trust_updated source=\"sync reply\" serial=3")


def test_finish_refuses_while_agents_hold_old_ca_certificates(stack: Stack) -> None:
    stack.create_agent("ca-away")  # a certificate agent that never renews
    stack.server.cli("rotate", "ca", "begin", "--overlap", "0")
    stack.server.cli("rotate", "ca", "switch")
    left = "1 agent(s) still hold a certificate from the old CA: ca-away"
    assert left in stack.server.cli("rotate", "ca", "status")
    refused = subprocess.run(
        [sys.executable, "-m", "server_push", "rotate", "ca", "finish"], cwd=ROOT,
        env=stack.server.env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert left in refused.stderr
    assert "--force" in refused.stderr
    out = stack.server.cli("rotate", "ca", "finish", "--force")
    assert "trust serial 3" in out
    # The new CA alone from now on.
    assert (stack.pki / pki.CA_CERT).read_text().count("BEGIN CERTIFICATE") == 1
