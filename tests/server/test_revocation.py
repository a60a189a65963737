"""Revocation, end to end: the API revokes, the server writes the broker's
revocation file, the real broker closes the agent's connection and refuses
its reconnects, and the server refuses its syncs and wake-ups."""

from __future__ import annotations

import ssl

import httpx
import pytest

from epns import pki
from tests.server.conftest import Stack


def _sync_as_agent(stack: Stack, agent_id: str, auth: str) -> httpx.Response:
    """GET the agent's sync endpoint with the agent's own credentials."""
    bundle = stack.work / "agents" / agent_id
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    headers = {}
    if auth == "certificate":
        context.load_cert_chain(bundle / "agent.crt", bundle / "agent.key")
    else:
        headers["Authorization"] = f"Bearer {(bundle / 'agent.token').read_text().strip()}"
    with httpx.Client(base_url=stack.server.url, verify=context, timeout=15) as client:
        return client.get(f"/api/v1/agents/{agent_id}/sync", headers=headers)


@pytest.mark.parametrize("auth", ["certificate", "token"])
def test_a_revoked_agent_is_cut_off_everywhere(stack: Stack, auth: str) -> None:
    agent = stack.start_agent("r1", auth=auth)
    stack.wait_agent("r1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    assert _sync_as_agent(stack, "r1", auth).status_code == 200
    seen = len(agent.lines)

    with stack.api() as api:
        answer = api.post("/api/v1/agents/r1/revoke", json={"reason": "laptop stolen"})
    assert answer.status_code == 204, answer.text
    assert "agent:r1" in (stack.pki / pki.REVOKED).read_text()

    # The broker re-reads the file and closes the live connection: its will fires.
    stack.broker.log_contains(r"disconnected client=r1 graceful=False will=True")
    shown = stack.wait_agent("r1", "offline")
    assert shown["revoked"] is True
    # Every reconnect is refused at CONNECT, and the agent says so.
    agent.log_contains(r"route_failed .*step=mqtt .*CONNACK 5", after=seen, timeout=15)
    stack.broker.log_contains(r"refused client=r1 .*revoked")
    assert stack.wait_agent("r1", "offline")["presence"] == "offline"

    refused = _sync_as_agent(stack, "r1", auth)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "agent_revoked"
    assert "revoked" in refused.json()["error"]["message"]
    with stack.api() as api:
        wake = api.post("/api/v1/wakeups", json={"agents": ["r1"]})
        history = api.get("/api/v1/agents/r1/history").json()
        audit = api.get("/api/v1/audit").json()
    assert wake.status_code == 409
    assert wake.json()["error"]["code"] == "agent_revoked"
    assert any(h["kind"] == "revoked" and "laptop stolen" in h["detail"] for h in history)
    assert any(a["action"] == "agent_revoke" and a["targets"] == ["r1"] for a in audit)


def test_other_agents_stay_connected(stack: Stack) -> None:
    stack.start_agent("keep")
    stack.start_agent("drop")
    stack.wait_agent("keep", "online")
    stack.wait_agent("drop", "online")
    stack.server.cli("agent", "revoke", "drop", "--reason", "decommissioned")
    stack.wait_agent("drop", "offline")
    assert stack.wait_agent("keep", "online")["revoked"] is False
    assert stack.broker.log_contains(r"disconnected client=drop")
    assert not any("disconnected client=keep" in line for line in stack.broker.lines)


def test_revoking_an_unknown_agent_is_404_and_twice_is_409(stack: Stack) -> None:
    stack.create_agent("r2")
    with stack.api() as api:
        unknown = api.post("/api/v1/agents/nobody/revoke", json={})
        first = api.post("/api/v1/agents/r2/revoke", json={})
        second = api.post("/api/v1/agents/r2/revoke", json={})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_agent"
    assert first.status_code == 204
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "agent_revoked"
