"""Retiring an agent (DELETE /api/v1/agents/{id}, epns-server agent retire):
its connection is cut as by a revocation, its row and history stay, and
lists and totals leave it out unless asked."""

from __future__ import annotations

import json

from epns import pki
from tests.server.conftest import Stack


def test_a_retired_agent_is_cut_off_kept_and_left_out_of_lists(stack: Stack) -> None:
    stack.start_agent("old")
    stack.start_agent("keep")
    stack.create_agent("spare")
    stack.wait_agent("old", "online")
    stack.wait_agent("keep", "online")
    with stack.api() as api:
        retired = api.delete("/api/v1/agents/old")
        again = api.delete("/api/v1/agents/old")
        unknown = api.delete("/api/v1/agents/nobody")
    assert retired.status_code == 204, retired.text
    assert (again.status_code, again.json()["error"]["code"]) == (409, "agent_retired")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_agent")
    assert "agent:old" in (stack.pki / pki.REVOKED).read_text()
    stack.broker.log_contains(r"disconnected client=old graceful=False will=True")
    shown = stack.wait_agent("old", "offline")
    assert shown["revoked"] is True
    assert shown["retired_at"] is not None

    stack.server.cli("agent", "retire", "spare", "--reason", "never installed")
    with stack.api() as api:
        listed = api.get("/api/v1/agents")
        included = api.get("/api/v1/agents", params={"retired": "include"})
        only = api.get("/api/v1/agents", params={"retired": "only"})
        summary = api.get("/api/v1/fleet/summary").json()
        history = api.get("/api/v1/agents/old/history").json()
        audit = api.get("/api/v1/audit", params={"action": "agent_retire"}).json()
    assert [a["id"] for a in listed.json()] == ["keep"]
    assert listed.headers["X-Total-Count"] == "1"
    assert [a["id"] for a in included.json()] == ["keep", "old", "spare"]
    assert [a["id"] for a in only.json()] == ["old", "spare"]
    assert summary["fleet"]["total"] == summary["total"] == 1
    assert summary["presence"]["online"] == 1
    assert history[0]["kind"] in ("retired", "offline")
    assert "retired" in {line["kind"] for line in history}
    assert "online" in {line["kind"] for line in history}  # what it did before is kept
    assert sorted(entry["targets"][0] for entry in audit) == ["old", "spare"]
    listed_cli = json.loads(stack.server.cli("agent", "list", "--retired", "only", "--json"))
    assert [a["id"] for a in listed_cli["agents"]] == ["old", "spare"]
