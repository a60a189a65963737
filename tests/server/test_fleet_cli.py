"""``epns-server agent list | groups``, ``token create | list | revoke`` and
``audit`` against a real server's database: the API's filters and sort, a
table or JSON (or the API's CSV), groups replaced, and a token revoked from
the command line refused by the running server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from server_push.store.models import Agent
from tests.server.conftest import Stack


def test_agent_list_filters_sorts_pages_and_prints_json(stack: Stack) -> None:
    now = time.time()
    rows: list[dict[str, object]] = [
        {"id": f"host-{n:02d}", "auth": "certificate", "created_at": now,
         "groups": ["even"] if n % 2 == 0 else ["odd"],
         "presence": "online" if n < 12 else "offline", "presence_at": now - n,
         "last_seen": now - n, "route": "mqtt", "version": "1.0", "hostname": f"box{n}",
         "interfaces": [], "inventory": {}, "renewals": 0} for n in range(20)]
    stack.insert_rows((Agent, rows))

    table = stack.server.cli("agent", "list", "--presence", "online", "--sort=-last_seen",
                             "--limit", "5", "--offset", "5").splitlines()
    assert table[0].split()[:3] == ["ID", "PRESENCE", "LAST", ]
    # Online are host-00..11; by last seen, newest first, the second page of five.
    assert [line.split()[0] for line in table[1:-1]] == [f"host-{n:02d}" for n in range(5, 10)]
    assert table[-1] == "6-10 of 12 (online 12, stale 0, offline 0, unknown 0)"

    listed = json.loads(stack.server.cli("agent", "list", "--group", "odd", "--presence",
                                         "offline", "--json", "--limit", "0"))
    assert [agent["id"] for agent in listed["agents"]] == [
        f"host-{n:02d}" for n in range(13, 20, 2)]
    assert listed["total"] == 4
    assert listed["presence"]["offline"] == 4


def test_agent_list_refuses_an_unknown_sort_field(stack: Stack) -> None:
    with pytest.raises(AssertionError, match="cannot sort by 'colour'"):
        stack.server.cli("agent", "list", "--sort", "colour")
    with pytest.raises(AssertionError, match="not a whole number"):
        stack.server.cli("agent", "list", "--limit", "-1")


@pytest.mark.timeout(300)  # six commands, each a Python start: 14 s apiece at load 12
def test_token_list_and_revoke(stack: Stack) -> None:
    before = time.time()
    spare = stack.server.cli("token", "create", "spare", "--ttl", "86400").strip()
    tokens = json.loads(stack.server.cli("token", "list", "--json"))
    by_name = {token["name"]: token for token in tokens}
    assert set(by_name) == {"tests", "spare"}
    assert not by_name["spare"]["revoked"]
    assert by_name["tests"]["expires_at"] is None
    assert before + 86400 <= by_name["spare"]["expires_at"] <= time.time() + 86400
    table = stack.server.cli("token", "list")
    assert by_name["spare"]["id"] in table
    assert "active" in table
    assert "EXPIRES" in table
    assert "never" in table

    said = stack.server.cli("token", "revoke", by_name["spare"]["id"])
    assert "revoked" in said
    with stack.server.client(spare) as api:
        assert api.get("/api/v1/agents").status_code == 401
    with stack.api() as api:
        assert api.get("/api/v1/agents").status_code == 200
    assert {t["name"]: t["revoked"] for t in json.loads(
        stack.server.cli("token", "list", "--json"))} == {"tests": False, "spare": True}
    with pytest.raises(AssertionError, match="is revoked already"):
        stack.server.cli("token", "revoke", by_name["spare"]["id"])
    audit = {(e["action"], e["ref"]) for e in stack_audit(stack)}
    assert {("token_create", by_name["spare"]["id"]),
            ("token_revoke", by_name["spare"]["id"])} <= audit


@pytest.mark.timeout(300)  # six commands, each a Python start: 14 s apiece at load 12
def test_agent_groups_and_the_audit_log(stack: Stack) -> None:
    before = time.time()
    stack.create_agent("g1", groups=("old",))
    said = stack.server.cli("agent", "groups", "g1", "--group", "lab", "--group", "floor-2")
    assert "groups lab, floor-2" in said
    with stack.api() as api:
        assert api.get("/api/v1/agents/g1").json()["groups"] == ["lab", "floor-2"]
        assert api.get("/api/v1/groups").json() == {"floor-2": 1, "lab": 1}
    assert "groups none" in stack.server.cli("agent", "groups", "g1")
    with pytest.raises(AssertionError, match="no agent 'nobody'"):
        stack.server.cli("agent", "groups", "nobody", "--group", "x")

    # The audit log from the command line: the API's filters, a table, CSV.
    listed = json.loads(stack.server.cli("audit", "--action", "agent_groups", "--json"))
    assert listed["total"] == 2
    assert [(e["actor"], e["targets"], e["outcome"]) for e in listed["entries"]] == [
        ("cli", ["g1"], "groups: none"), ("cli", ["g1"], "groups: lab, floor-2")]
    table = stack.server.cli("audit", "--target", "g1", "--oldest-first").splitlines()
    assert table[0].split() == ["AT", "ACTOR", "ACTION", "TARGETS", "OUTCOME"]
    # AT is a date and a time: the action is the fourth word.
    assert [line.split()[3] for line in table[1:-1]] == [
        "agent_create", "agent_groups", "agent_groups"]
    assert table[-1] == "1-3 of 3"
    with stack.api() as api:
        exported = api.get("/api/v1/audit", params={
            "target": "g1", "since": str(before), "format": "csv"}).text
    printed = stack.server.cli("audit", "--target", "g1", "--since", str(before), "--csv")
    assert printed == exported.replace("\r\n", "\n")  # the CLI's stdout is read as text
    assert exported.count("\r\n") == 4  # the header and three entries


def stack_audit(stack: Stack) -> list[dict[str, Any]]:
    """The whole audit log, through the API."""
    with stack.api() as api:
        entries: list[dict[str, Any]] = api.get("/api/v1/audit", params={"limit": 1000}).json()
    return entries
