"""The delivery contract, end to end: real broker, real server, real agents."""

from __future__ import annotations

from tests.server.conftest import Stack


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
