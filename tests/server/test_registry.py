"""The registry: presence, staleness, discovered agents, history."""

from __future__ import annotations

from epns import pki
from tests.server.conftest import Stack


def test_agents_show_stale_while_the_server_has_lost_the_broker(stack: Stack) -> None:
    stack.start_agent("a1")
    stack.wait_agent("a1", "online")
    stack.stop_broker()
    stack.wait_agent("a1", "stale")
    stack.start_broker()
    stack.wait_agent("a1", "online", timeout=30)


def test_an_agent_with_a_fleet_certificate_is_discovered(stack: Stack) -> None:
    ca = pki.Pair(stack.pki / pki.CA_CERT, stack.pki / pki.CA_KEY)
    pki.create_client_cert(ca, pki.agent_pair(stack.pki, "walk-in"), "walk-in")
    bundle = stack.work / "agents" / "walk-in"
    bundle.mkdir(parents=True)
    pair = pki.agent_pair(stack.pki, "walk-in")
    (bundle / "agent.crt").write_text(pair.cert.read_text())
    (bundle / "agent.key").write_text(pair.key.read_text())
    stack.start_agent("walk-in", create=False)
    agent = stack.wait_agent("walk-in", "online")
    assert agent["auth"] == "discovered"
    with stack.api() as api:
        history = api.get("/api/v1/agents/walk-in/history").json()
    kinds = [line["kind"] for line in history]
    assert "discovered" in kinds
    assert "online" in kinds


def test_history_tells_the_story_of_a_wakeup(stack: Stack) -> None:
    agent = stack.start_agent("a1")
    stack.wait_agent("a1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    with stack.api() as api:
        wakeup = api.post("/api/v1/wakeups", json={"agents": ["a1"]}).json()
    stack.wait_wakeup(wakeup["id"], "satisfied")
    with stack.api() as api:
        history = api.get("/api/v1/agents/a1/history").json()
        view = api.get("/api/v1/agents/a1").json()
    kinds = [line["kind"] for line in reversed(history)]
    assert kinds[:2] == ["created", "online"]
    assert kinds.index("wake_requested") < kinds.index("wake_delivered")
    assert "sync" in kinds[kinds.index("wake_delivered"):]
    assert view["last_sync_result"] == "ok"
    assert view["interfaces"]
    assert view["version"]
