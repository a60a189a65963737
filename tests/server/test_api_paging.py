"""The agents' list at fleet scale: 10,000 rows written straight into the
server's database, then paged, sorted, filtered and counted through the API
of a real server, on SQLite and on PostgreSQL. Every expectation is computed
here from the rows the test wrote, not from the server's code."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from server_push.store.models import Agent, AuditEntry, Wakeup
from tests.server.conftest import Stack
from tests.support.postgres import available, postgres_cluster

ROWS = 10_000
PAGE = 1000
# Far from presence.stale_after (1350 s) either way: no row sits on the edge.
FRESH, OLD = 5.0, 10 * 86400.0
GROUPS = ("floor-1", "floor-2", "lab_x", "Lab")
ROUTES = ("mqtt", "ws", "wss-443", None)
VERSIONS = ("1.0.0", "1.10.0", "1.2.0", "2.0.0", None)
SORTS = ("id", "last_seen", "presence", "route", "version", "group", "identity_expires_at")
PRESENCE_ORDER = ("online", "stale", "offline", "unknown")


def _fleet(now: float) -> list[dict[str, Any]]:
    """The rows, varied in every field the list sorts or filters by."""
    chance = random.Random(20)
    rows = []
    for n in range(ROWS):
        stored = chance.choice(("online", "online", "offline", "unknown"))
        seen = None if stored == "unknown" else now - chance.choice((FRESH, OLD)) - n * 1e-3
        rows.append({
            "id": f"pc-{n:05d}", "auth": "certificate", "created_at": now - 100,
            "groups": sorted(chance.sample(GROUPS, chance.randint(0, 2))),
            "presence": stored, "presence_at": seen, "last_seen": seen,
            "route": None if stored == "unknown" else chance.choice(ROUTES),
            "version": None if stored == "unknown" else chance.choice(VERSIONS),
            "hostname": chance.choice((None, f"Host-{n}.Example")),
            "identity_expires_at": chance.choice((None, now + chance.uniform(-1e5, 1e7))),
            "interfaces": [], "inventory": {}, "renewals": 0})
    return rows


def _shown(row: dict[str, Any], now: float) -> str:
    if row["presence"] != "online":
        return str(row["presence"])
    return "online" if now - row["last_seen"] <= 1350.0 else "stale"


def _key(row: dict[str, Any], field: str, now: float) -> Any:
    if field == "presence":
        return PRESENCE_ORDER.index(_shown(row, now))
    if field == "group":
        return repr(row["groups"]).replace("'", '"')  # the JSON text, ["a", "b"]
    return row[field]


def _expected(rows: list[dict[str, Any]], field: str, descending: bool,
              now: float) -> list[str]:
    """Ids in the API's order: by field (missing last either way), then id."""
    present = sorted((r for r in rows if _key(r, field, now) is not None), key=lambda r: r["id"])
    present.sort(key=lambda r: _key(r, field, now), reverse=descending)
    missing = sorted(r["id"] for r in rows if _key(r, field, now) is None)
    return [r["id"] for r in present] + missing


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not available():
        pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql")
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest,
          make_stack: Callable[..., Stack]) -> tuple[Stack, list[dict[str, Any]]]:
    """A server whose database holds ROWS agents, and those rows."""
    overrides = ({"database__url": request.getfixturevalue("postgres_url")}
                 if request.param == "postgresql" else {})
    stack = make_stack(**overrides)
    rows = _fleet(time.time())
    started = time.monotonic()
    stack.insert_rows((Agent, rows))
    print(f"\n{request.param}: {ROWS} agent rows inserted in "
          f"{time.monotonic() - started:.2f} s")
    return stack, rows


def _page(api: httpx.Client, **params: Any) -> httpx.Response:
    answer = api.get("/api/v1/agents", params=params)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.mark.timeout(600)
def test_ten_thousand_agents_page_sort_filter_and_count(
        fleet: tuple[Stack, list[dict[str, Any]]]) -> None:
    stack, rows = fleet
    now = time.time()
    with stack.api() as api:
        # Presence is online only while the server holds its broker link.
        deadline = time.monotonic() + 15
        while not api.get("/api/v1/health").json()["broker"] and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        first = _page(api, sort="-last_seen", limit=50, presence="online")
        print(f"one page of 50 (online, by -last_seen) at {ROWS} rows: "
              f"{(time.monotonic() - started) * 1000:.0f} ms")
        assert int(first.headers["X-Total-Count"]) == sum(
            _shown(r, now) == "online" for r in rows)

        # Every page, for every sort field both ways: disjoint, complete, in order.
        for field in SORTS:
            for descending in (False, True):
                sort = f"-{field}" if descending else field
                seen: list[str] = []
                offset = 0
                for _ in range(ROWS // PAGE + 1):
                    answer = _page(api, sort=sort, limit=PAGE, offset=offset)
                    assert int(answer.headers["X-Total-Count"]) == ROWS
                    seen += [agent["id"] for agent in answer.json()]
                    if 'rel="next"' not in answer.headers["Link"]:
                        break
                    offset += PAGE
                assert len(seen) == len(set(seen)) == ROWS, sort
                assert seen == _expected(rows, field, descending, now), sort

        # Filters, alone and together, against counts made here.
        cases: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
            ({"presence": "stale"}, lambda r: _shown(r, now) == "stale"),
            ({"presence": ["offline", "unknown"]},
             lambda r: _shown(r, now) in ("offline", "unknown")),
            ({"group": "Lab"}, lambda r: "Lab" in r["groups"]),
            ({"group": ["lab_x", "floor-2"]},
             lambda r: "lab_x" in r["groups"] or "floor-2" in r["groups"]),
            ({"route": "ws"}, lambda r: r["route"] == "ws"),
            ({"version": ["1.10.0", "2.0.0"]}, lambda r: r["version"] in ("1.10.0", "2.0.0")),
            ({"last_seen_before": now - 3600}, lambda r: (r["last_seen"] or now) < now - 3600),
            ({"last_seen_after": now - 3600}, lambda r: (r["last_seen"] or 0) >= now - 3600),
            ({"q": "example"}, lambda r: "example" in (r["hostname"] or "").lower()),
            ({"q": "PC-0012"}, lambda r: "pc-0012" in r["id"]),
            ({"expiring_within": 86400},
             lambda r: r["identity_expires_at"] is not None
             and r["identity_expires_at"] <= now + 86400),
            ({"presence": "online", "group": "floor-1", "route": ["mqtt", "ws"]},
             lambda r: _shown(r, now) == "online" and "floor-1" in r["groups"]
             and r["route"] in ("mqtt", "ws")),
        ]
        for params, matches in cases:
            wanted = sorted(r["id"] for r in rows if matches(r))
            assert wanted, params  # each case selects something
            answer = _page(api, **params)
            assert [a["id"] for a in answer.json()] == wanted, params
            assert int(answer.headers["X-Total-Count"]) == len(wanted), params
            paged = _page(api, **params, limit=7, offset=3)
            assert [a["id"] for a in paged.json()] == wanted[3:10], params
            assert int(paged.headers["X-Total-Count"]) == len(wanted), params
            summary = api.get("/api/v1/fleet/summary", params=params).json()
            assert summary["total"] == len(wanted), params
            assert summary["presence"] == {
                name: sum(matches(r) and _shown(r, now) == name for r in rows)
                for name in PRESENCE_ORDER}, params
            assert summary["fleet"]["presence"] == {
                name: sum(_shown(r, now) == name for r in rows) for name in PRESENCE_ORDER}
            assert summary["fleet"]["total"] == ROWS

        # The Link header names the last page and has no next on it.
        last = _page(api, limit=PAGE, offset=ROWS - PAGE, sort="id")
        assert 'rel="next"' not in last.headers["Link"]
        assert f"offset={ROWS - 2 * PAGE}" in last.headers["Link"]


def _refused(answer: httpx.Response, fragment: str) -> None:
    assert answer.status_code == 422, answer.text
    assert fragment in answer.json()["error"]["message"], answer.text


def test_unknown_sort_fields_and_filters_are_422_not_ignored(stack: Stack) -> None:
    with stack.api() as api:
        _refused(api.get("/api/v1/agents", params={"sort": "colour"}), "'colour'")
        _refused(api.get("/api/v1/agents", params={"sort": "-id,-colour"}), "'-colour'")
        _refused(api.get("/api/v1/agents", params={"sort": "id,-id"}), "twice")
        _refused(api.get("/api/v1/agents", params={"colour": "red"}), "'colour'")
        _refused(api.get("/api/v1/agents", params={"page": "2", "limit": "5"}), "'page'")
        _refused(api.get("/api/v1/fleet/summary", params={"sort": "id"}), "'sort'")
        for bad in ({"presence": "asleep"}, {"limit": "0"}, {"limit": "1001"},
                    {"offset": "-1"}, {"group": "a b"}):
            assert api.get("/api/v1/agents", params=bad).status_code == 422, bad


def _all_pages(api: httpx.Client, path: str, limit: int, **params: Any) -> list[Any]:
    """Follow rel=next from the first page; every row seen, in order."""
    seen: list[Any] = []
    answer = api.get(path, params={**params, "limit": limit})
    for _ in range(1000):
        assert answer.status_code == 200, answer.text
        seen += answer.json()
        links = {rel: url.strip("<>") for url, rel in (
            part.split("; ") for part in answer.headers["Link"].split(", "))}
        if 'rel="next"' not in links:
            return seen
        answer = api.get(links['rel="next"'])
    raise AssertionError("more than 1000 pages")


def test_wakeups_and_audit_page_filter_and_export_csv(stack: Stack) -> None:
    base = time.time() - 1e6
    chance = random.Random(7)
    actions = ("wakeup", "revoke", "ping")
    audit: list[dict[str, Any]] = [
        {"at": base + n, "actor": f"actor-{n % 7}", "action": chance.choice(actions),
         "targets": [f"pc-{n % 50}", f"pc-{n % 3 + 100}"], "outcome": f"done, {n}",
         "ref": None} for n in range(2500)]
    wakeups: list[dict[str, Any]] = [
        {"id": f"{n:032x}", "created_at": base + n, "expires_at": base + n + 900,
         "requested_by": f"token:caller-{n % 4}",
         "target_kind": chance.choice(("agents", "group", "all")), "target": ["x"],
         "idempotency_key": None} for n in range(300)]

    stack.insert_rows((AuditEntry, audit), (Wakeup, wakeups))
    mine = {"since": base, "until": base + 1e5}
    with stack.api() as api:
        entries = _all_pages(api, "/api/v1/audit", 300, **mine)
        assert [e["at"] for e in entries] == sorted((a["at"] for a in audit), reverse=True)
        oldest_first = _all_pages(api, "/api/v1/audit", 999, sort="at", **mine)
        assert [e["outcome"] for e in oldest_first] == [a["outcome"] for a in audit]
        wanted = [a for a in audit if a["actor"] in ("actor-1", "actor-3")
                  and a["action"] == "revoke" and ("pc-7" in a["targets"]
                                                   or "pc-101" in a["targets"])]
        answer = api.get("/api/v1/audit", params={
            "actor": ["actor-1", "actor-3"], "action": "revoke", "target": ["pc-7", "pc-101"],
            "limit": 1000, **mine})
        assert [e["at"] for e in answer.json()] == sorted(
            (a["at"] for a in wanted), reverse=True)
        assert int(answer.headers["X-Total-Count"]) == len(wanted) > 0
        window = api.get("/api/v1/audit", params={"since": base + 10, "until": base + 20})
        assert [e["at"] for e in window.json()] == [base + n for n in range(19, 9, -1)]

        exported = api.get("/api/v1/audit", params={"actor": "actor-2", **mine},
                           headers={"Accept": "text/csv"})
        by_format = api.get("/api/v1/audit", params={"actor": "actor-2", "format": "csv",
                                                     **mine})
        assert exported.headers["content-type"].startswith("text/csv")
        assert exported.text == by_format.text
        lines = list(csv.reader(io.StringIO(exported.text)))
        assert lines[0] == ["at", "actor", "action", "targets", "outcome", "ref"]
        expected = sorted((a for a in audit if a["actor"] == "actor-2"),
                          key=lambda a: -a["at"])
        assert len(lines) - 1 == len(expected) > 100  # all of them, past JSON's default
        assert [(float(row[0]), row[4], json.loads(row[3])) for row in lines[1:]] == [
            (a["at"], a["outcome"], a["targets"]) for a in expected]

        listed = _all_pages(api, "/api/v1/wakeups", 40, created_after=base,
                            created_before=base + 1e5)
        assert [w["id"] for w in listed] == [w["id"] for w in reversed(wakeups)]
        kinds = api.get("/api/v1/wakeups", params={
            "requested_by": ["token:caller-0", "token:caller-3"], "target_kind": "group",
            "sort": "created_at", "limit": 500, "created_after": base})
        assert [w["id"] for w in kinds.json()] == [
            w["id"] for w in wakeups if w["target_kind"] == "group"
            and w["requested_by"] in ("token:caller-0", "token:caller-3")]
        assert int(kinds.headers["X-Total-Count"]) == len(kinds.json())

        for path, bad in (("/api/v1/audit", {"who": "x"}), ("/api/v1/audit", {"sort": "actor"}),
                          ("/api/v1/audit", {"format": "xml"}),
                          ("/api/v1/wakeups", {"state": "done"}),
                          ("/api/v1/wakeups", {"sort": "expires_at"})):
            assert api.get(path, params=bad).status_code == 422, (path, bad)
