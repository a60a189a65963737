"""Renewal with lifetimes of seconds, real processes: a certificate agent and
a token agent renew again and again while wake-ups keep coming, and none is
missed; the broker sees each reconnect with the new identity; an agent whose
server is down keeps its identity and connection and retries."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.server.conftest import Stack

RENEWAL = {"retry_base": 1.0, "retry_cap": 2.0}


def _renewed_ids(lines: list[str]) -> list[str]:
    return [m.group(1) for line in list(lines)
            if (m := re.search(r"identity_renewed .*id=(\w+)", line))]


@pytest.mark.timeout(240)
def test_agents_renew_again_and_again_while_every_wake_up_is_satisfied(
        make_stack: Any) -> None:
    stack: Stack = make_stack(identity__certificate_lifetime="12",
                              identity__token_lifetime="12",
                              identity__renewals_per_hour="36000",
                              identity__renewal_burst="10",
                              # A wake-up a second per agent for a minute is no abuse here.
                              wakeups__per_minute="6000", wakeups__burst="100",
                              budgets__syncs_per_minute="6000", budgets__syncs_burst="100",
                              budgets__events_per_minute="6000", budgets__events_burst="200")
    agents = {"c1": stack.start_agent("c1", renewal=RENEWAL),
              "t1": stack.start_agent("t1", auth="token", renewal=RENEWAL)}
    for agent_id in agents:
        stack.wait_agent(agent_id, "online")
    wakeups: list[tuple[str, str]] = []
    deadline = time.monotonic() + 150
    # Wake both agents every second until each renewed three times.
    while any(len(_renewed_ids(a.lines)) < 3 for a in agents.values()):
        assert time.monotonic() < deadline, {k: _renewed_ids(a.lines)
                                             for k, a in agents.items()}
        for agent_id in agents:
            wakeups.append((agent_id, stack.wake(agent_id)))
        time.sleep(1.0)
    for agent_id in agents:
        wakeups.append((agent_id, stack.wake(agent_id)))
    # Every one of them is satisfied: none was lost across the switches.
    for agent_id, wakeup_id in wakeups:
        seen = stack.wait_wakeup(wakeup_id, "satisfied", timeout=30)
        assert seen["counts"].get("expired", 0) == 0, (agent_id, seen)
    assert len(wakeups) >= 20

    with stack.api() as api:
        shown = {a: api.get(f"/api/v1/agents/{a}").json() for a in agents}
        history = {a: api.get(f"/api/v1/agents/{a}/history").json() for a in agents}
    for agent_id, agent in agents.items():
        renewed = _renewed_ids(agent.lines)
        assert len(set(renewed)) == len(renewed) >= 3
        assert shown[agent_id]["renewals"] >= len(renewed)
        assert shown[agent_id]["identity_expires_at"] > time.time() - 12
        kinds = [h["kind"] for h in history[agent_id]]
        assert kinds.count("renewed") >= 3
        # The switches were clean: no last will, so never shown offline.
        assert "offline" not in kinds
        # The broker saw the agent come back with each new identity.
        for new_id in renewed[:-1]:
            stack.broker.log_contains(rf"connected client={agent_id} .*id={new_id}\b")
        assert agent.count(r"renewal_failed") == 0
    code, status = agents["c1"].status()
    assert code == 0, status
    assert re.search(r"identity: expires .*\(in \d+ s\)", status), status
    assert re.search(r"last renewal: .*\(\d+ s ago\): ok", status), status
    assert "moving to the renewed identity" not in status, status
    assert "next renewal: in" in status, status


@pytest.mark.timeout(180)
def test_an_agent_keeps_its_identity_while_the_server_is_down(make_stack: Any) -> None:
    stack: Stack = make_stack(identity__certificate_lifetime="40",
                              identity__renewals_per_hour="36000")
    agent = stack.start_agent("d1", renewal=RENEWAL)
    stack.wait_agent("d1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    stack.server.stop()
    # Due at two thirds of 40 s: each try fails, is logged, and is retried.
    agent.log_contains(r"renewal_failed .*failures=2 .*keeps using the current identity",
                       timeout=60)
    assert not _renewed_ids(agent.lines)
    assert agent.count(r"\bdisconnected\b") == 0
    stack.restart_server()
    agent.log_contains(r"identity_renewed ", timeout=30)
    stack.wait_agent("d1", "online")
    wakeup_id = stack.wake("d1")
    stack.wait_wakeup(wakeup_id, "satisfied", timeout=30)


@pytest.mark.timeout(120)
def test_a_renew_task_makes_an_agent_renew_now(stack: Stack) -> None:
    """The server's way to ask for a renewal before it is due (a CA
    rotation): a ``renew`` task, taken at the agent's next sync."""
    agent = stack.start_agent("n1", renewal=RENEWAL)
    stack.wait_agent("n1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    assert not _renewed_ids(agent.lines)
    with stack.api() as api:
        before = api.get("/api/v1/agents/n1").json()
        task = api.post("/api/v1/agents/n1/tasks", json={"type": "renew"})
    assert task.status_code == 201, task.text
    stack.wait_wakeup(stack.wake("n1"), "satisfied")
    agent.log_contains(r'identity_renewed why="asked by the server"')
    deadline = time.monotonic() + 15
    while True:
        with stack.api() as api:
            after = api.get("/api/v1/agents/n1").json()
            tasks = api.get("/api/v1/agents/n1/tasks").json()
        if after["renewals"] == 1 and tasks[0]["state"] == "done":
            break
        assert time.monotonic() < deadline, (after, tasks)
        stack.wake("n1")
        time.sleep(0.5)
    # Certificates carry whole seconds: a renewal in the second the agent was
    # created keeps the same end, so the new identity is proved by its id at
    # the broker, and renewed_at by the server.
    assert after["identity_expires_at"] >= before["identity_expires_at"]
    assert after["renewed_at"] is not None
    assert before["renewed_at"] is None
    stack.broker.log_contains(rf"connected client=n1 .*id={_renewed_ids(agent.lines)[0]}\b")
    stack.wait_wakeup(stack.wake("n1"), "satisfied")
