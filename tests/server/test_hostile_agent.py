"""One agent with its own valid certificate must not stop push for the fleet."""

from __future__ import annotations

import json
import time

from tests.server.conftest import Stack
from tests.support.clients import connect


def _wake(stack: Stack, agent_id: str) -> str:
    with stack.api() as api:
        answer = api.post("/api/v1/wakeups", json={"agents": [agent_id]})
    assert answer.status_code == 202, answer.text
    wakeup_id: str = answer.json()["id"]
    return wakeup_id


def _health(stack: Stack) -> dict[str, object]:
    with stack.api() as api:
        answer = api.get("/api/v1/health")
    result: dict[str, object] = answer.json()
    return result


def test_a_retained_presence_of_the_wrong_types_does_not_cut_the_link(stack: Stack) -> None:
    stack.start_agent("good")
    stack.wait_agent("good", "online")
    bundle = stack.create_agent("evil")
    hostile = connect(stack.broker.port, stack.pki, "evil",
                      cert=(bundle / "agent.crt", bundle / "agent.key"))
    hostile.publish("epns/v1/agents/evil/presence",
                    json.dumps({"v": 1, "state": "online", "at": time.time(),
                                "route": ["x"]}).encode(), retain=True)
    time.sleep(1.5)
    assert _health(stack)["broker"] is True
    stack.wait_wakeup(_wake(stack, "good"), "satisfied")
