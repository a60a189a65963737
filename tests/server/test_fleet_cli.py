"""``epns-server agent list`` and ``token list | revoke`` against a real
server's database: the API's filters and sort, a table or JSON, and a token
revoked from the command line refused by the running server."""

from __future__ import annotations

import json
import time

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


def test_token_list_and_revoke(stack: Stack) -> None:
    spare = stack.server.cli("token", "create", "spare").strip()
    tokens = json.loads(stack.server.cli("token", "list", "--json"))
    by_name = {token["name"]: token for token in tokens}
    assert set(by_name) == {"tests", "spare"}
    assert not by_name["spare"]["revoked"]
    table = stack.server.cli("token", "list")
    assert by_name["spare"]["id"] in table
    assert "active" in table

    said = stack.server.cli("token", "revoke", by_name["spare"]["id"])
    assert "revoked" in said
    with stack.server.client(spare) as api:
        assert api.get("/api/v1/agents").status_code == 401
    with stack.api() as api:
        assert api.get("/api/v1/agents").status_code == 200
    assert {t["name"]: t["revoked"] for t in json.loads(
        stack.server.cli("token", "list", "--json"))} == {"tests": False, "spare": True}
    with pytest.raises(AssertionError, match="no active API token"):
        stack.server.cli("token", "revoke", by_name["spare"]["id"])
