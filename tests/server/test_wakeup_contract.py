"""The delivery contract, end to end: real broker, real server, real agents."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.server.conftest import Stack
from tests.support.agents import AgentProcess
from tests.support.server import start_server


def _wake(stack: Stack, status: int = 202, headers: dict[str, str] | None = None,
          **body: object) -> dict[str, object]:
    with stack.api() as api:
        answer = api.post("/api/v1/wakeups", json=body, headers=headers or {})
    assert answer.status_code == status, answer.text
    result: dict[str, object] = answer.json()
    return result


def test_wakeup_of_an_online_agent_reaches_satisfied(stack: Stack) -> None:
    agent = stack.start_agent("a1")
    stack.wait_agent("a1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    wakeup = _wake(stack, agents=["a1"])
    done = stack.wait_wakeup(str(wakeup["id"]), "satisfied")
    assert done["done"] is True
    target = done["targets"][0]
    assert target["agent_id"] == "a1"
    assert target["requested_at"] < target["delivered_at"] <= target["satisfied_at"]
    line = agent.log_contains(r"sync_done .*reason=wake")
    assert "status=200" in line


def _offline_agent(stack: Stack, agent_id: str) -> None:
    """An agent that has been online once (so the server knows it) and is now down."""
    agent = stack.start_agent(agent_id)
    stack.wait_agent(agent_id, "online")
    agent.log_contains(r"sync_done .*reason=connect")
    agent.stop()
    stack.agents.remove(agent)
    stack.wait_agent(agent_id, "offline")


def _restart_agent(stack: Stack, agent_id: str, **sections: dict[str, Any]) -> AgentProcess:
    return stack.start_agent(agent_id, create=False, **sections)


def test_wakeup_of_an_offline_agent_is_satisfied_after_it_reconnects(stack: Stack) -> None:
    _offline_agent(stack, "a1")
    wakeup = _wake(stack, agents=["a1"])
    time.sleep(1.0)
    assert stack.wakeup(str(wakeup["id"]))["counts"]["requested"] == 1
    agent = _restart_agent(stack, "a1")
    done = stack.wait_wakeup(str(wakeup["id"]), "satisfied")
    assert done["targets"][0]["satisfied_at"] > done["created_at"]
    # The broker kept the command for the agent's session: it arrives too.
    agent.log_contains(r"command_accepted .*type=wake")


def test_wakeup_expires_when_its_ttl_runs_out(stack: Stack) -> None:
    _offline_agent(stack, "a1")
    wakeup = _wake(stack, agents=["a1"], ttl=2)
    done = stack.wait_wakeup(str(wakeup["id"]), "expired", timeout=10)
    assert done["done"] is True
    assert done["counts"]["satisfied"] == 0
    target = done["targets"][0]
    assert target["state"] == "expired"
    assert target["ended_at"] >= done["expires_at"]
    with stack.api() as api:
        audit = api.get("/api/v1/audit").json()
    entry = next(e for e in audit if e["ref"] == wakeup["id"])
    assert entry["outcome"] == "satisfied 0/1, expired 1/1"
    assert entry["actor"] == "token:tests"
    assert entry["targets"] == ["a1"]


def test_requests_for_an_offline_agent_collapse_into_one_command(stack: Stack) -> None:
    _offline_agent(stack, "a1")
    first = _wake(stack, agents=["a1"])
    later = [_wake(stack, agents=["a1"]) for _ in range(3)]
    stack.server.log_contains(r"wakeup_accepted .*collapsed=1")
    assert sum(1 for line in stack.server.lines if "collapsed=0" in line) == 1
    agent = _restart_agent(stack, "a1")
    for wakeup in [first, *later]:
        stack.wait_wakeup(str(wakeup["id"]), "satisfied")
    agent.log_contains(r"command_accepted .*type=wake")
    time.sleep(1.0)
    assert agent.count(r"command_accepted .*type=wake") == 1


def test_an_idempotency_key_returns_the_first_request(stack: Stack) -> None:
    stack.start_agent("a1")
    stack.wait_agent("a1", "online")
    key = {"Idempotency-Key": "job-42"}
    first = _wake(stack, headers=key, agents=["a1"])
    again = _wake(stack, status=200, headers=key, agents=["a1"])
    other = _wake(stack, headers={"Idempotency-Key": "job-43"}, agents=["a1"])
    assert again["id"] == first["id"]
    assert other["id"] != first["id"]
    with stack.api() as api:
        wakeups = api.get("/api/v1/wakeups").json()
    assert sorted(w["id"] for w in wakeups) == sorted([first["id"], other["id"]])


def test_a_group_wakeup_is_one_publish_and_reaches_every_member(stack: Stack) -> None:
    members = [stack.start_agent(f"g{n}", groups=("floor-2",)) for n in range(3)]
    outsider = stack.start_agent("x1", groups=("floor-3",))
    for agent_id in ("g0", "g1", "g2", "x1"):
        stack.wait_agent(agent_id, "online")
    for agent in [*members, outsider]:
        agent.log_contains(r"sync_done .*reason=connect")
    wakeup = _wake(stack, group="floor-2")
    done = stack.wait_wakeup(str(wakeup["id"]), "satisfied", count=3)
    assert sorted(t["agent_id"] for t in done["targets"]) == ["g0", "g1", "g2"]
    for agent in members:
        agent.log_contains(r"command_accepted .*target=group:floor-2")
    assert outsider.count("command_accepted") == 0
    everyone = _wake(stack, all=True)
    stack.wait_wakeup(str(everyone["id"]), "satisfied", count=4)
    outsider.log_contains(r"command_accepted .*target=all")


def test_the_record_survives_a_server_restart_in_the_middle_of_a_wakeup(stack: Stack) -> None:
    _offline_agent(stack, "a1")
    wakeup = _wake(stack, agents=["a1"])
    stack.restart_server()
    _restart_agent(stack, "a1")
    stack.wait_wakeup(str(wakeup["id"]), "satisfied")


def test_an_ack_sent_while_the_server_is_down_is_not_lost(stack: Stack) -> None:
    _offline_agent(stack, "a1")
    wakeup = _wake(stack, agents=["a1"])
    port = int(stack.server.url.rsplit(":", 1)[1])
    stack.server.stop()
    # The agent takes the command and acks it while the server is away; its
    # syncs fail until the server is back, and it retries them with backoff
    # (1 s, then up to 2, 4, 8 s…), long before its interval (the server's
    # hint from the first connect, 600 s): a retry carries the wake.
    agent = _restart_agent(stack, "a1", sync={"retry_base": 1.0})
    agent.log_contains(r"command_accepted .*type=wake")
    agent.log_contains(r"sync_failed|sync_done .*ok=False|sync.*refused", timeout=15)
    stack.server = start_server(stack.pki, stack.work, stack.broker.port, http_port=port)
    stack.wait_wakeup(str(wakeup["id"]), "satisfied", timeout=20)
    agent.log_contains(r"sync_done .*reason=retry")
    # Satisfied by the retry, not by a wake-up sent again.
    assert agent.count(r"command_accepted .*type=wake") == 1
    assert not any("wake_reissued" in line for line in stack.server.lines)


def test_a_command_held_while_the_broker_is_down_is_sent_when_it_is_back(stack: Stack) -> None:
    agent = stack.start_agent("a1")
    stack.wait_agent("a1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    stack.stop_broker()
    wakeup = _wake(stack, agents=["a1"])
    stack.server.log_contains(r"command_held .*")
    assert stack.wakeup(str(wakeup["id"]))["counts"]["requested"] == 1
    stack.start_broker()
    stack.server.log_contains(r"commands_flushed sent=1 held=0", timeout=20)
    stack.wait_wakeup(str(wakeup["id"]), "satisfied", timeout=20)


def test_presence_is_rebuilt_after_a_server_restart(stack: Stack) -> None:
    stack.start_agent("a1")
    before = stack.wait_agent("a1", "online")
    stack.restart_server()
    after = stack.wait_agent("a1", "online")
    assert after["route"] == before["route"]
    assert after["route"].startswith("direct:")


def test_the_contract_holds_with_mosquitto(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(broker="mosquitto")
    agent = stack.start_agent("a001")
    stack.wait_agent("a001", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    wakeup = _wake(stack, agents=["a001"])
    stack.wait_wakeup(str(wakeup["id"]), "satisfied")
