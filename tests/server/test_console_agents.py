"""The console's agents page at fleet scale, in Debian's chromium: paging,
sorting, every filter and the totals against the API; "select all matching"
wakes exactly the filter's agents; large actions ask first, naming the count,
and a cancel sends nothing; a live presence change redraws its row.

One stack and one browser for the module: 300 agent rows written straight
into the server's database (groups, presences, routes, versions, last seen
and identity expiry varied), plus one real agent for the live change.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from server_push.store.models import Agent
from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import ARTIFACTS, CHROMIUM, Console, _set_password, _spki_pin
from tests.support.processes import wait_until

ROWS = 300
FLOOR_2 = 40      # agents in group floor-2: under the confirmation threshold
LAB = 55          # agents in group lab: over it, and under Wake-on-LAN's 64
ROUTES = ("primary", "fallback", "websocket", None)
VERSIONS = ("1.4.0", "1.5.0", "2.0.0")
FRESH, OLD = 5.0, 10 * 86400.0


def _rows(now: float) -> list[dict[str, Any]]:
    chance = random.Random(18)
    rows = []
    for n in range(ROWS):
        groups = (["floor-2"] if n < FLOOR_2 else ["lab"] if n < FLOOR_2 + LAB
                  else ["floor-1"] if n < 200 else [])
        stored = chance.choice(("online", "online", "offline", "unknown"))
        seen = None if stored == "unknown" else now - chance.choice((FRESH, OLD)) - n
        rows.append({
            "id": f"pc-{n:03d}", "auth": "certificate", "created_at": now - 1000,
            "groups": groups, "presence": stored, "presence_at": seen, "last_seen": seen,
            "route": None if stored == "unknown" else chance.choice(ROUTES),
            "version": None if stored == "unknown" else chance.choice(VERSIONS),
            "hostname": f"host-{n}.example", "inventory": {}, "renewals": 0,
            # Made-up MACs in the benchmarking range: a Wake-on-LAN preflight
            # finds a path (the server's own packets would go to the settings'
            # 127.255.255.255 only), and the test never confirms a send.
            "interfaces": [{"address": f"198.18.1.{n % 250 + 1}", "prefix": 24,
                            "mac": f"02:00:00:00:{n // 256:02x}:{n % 256:02x}"}],
            "identity_expires_at": now + chance.choice((3600.0, 90 * 86400.0))})
    return rows


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose database holds ROWS agents (and its broker link up)."""
    stack = _make_stack(tmp_path_factory.mktemp("agents-page"), "epns", {})
    try:
        stack.insert_rows((Agent, _rows(time.time())))
        _set_password(stack)
        with stack.api() as api:
            wait_until(lambda: bool(api.get("/api/v1/health").json()["broker"]),
                       "the server's broker link")
            wol = api.get("/api/v1/settings/wol").json()
            saved = api.put("/api/v1/settings/wol", json={**wol, "addresses": ["127.255.255.255"]})
            assert saved.status_code == 200, saved.text
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser(fleet: Stack) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("the console tests need Debian's chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            f"--ignore-certificate-errors-spki-list={_spki_pin(fleet.pki / 'broker.crt')}"])
        yield launched
        launched.close()


@pytest.fixture
def tab(fleet: Stack, browser: Browser) -> Iterator[Console]:
    """A logged-in tab of its own on the agents page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = Console(fleet, context, context.new_page())
    opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.page.on("console", lambda message: opened.errors.append(message.text) if (
        message.type == "error"
        and not message.text.startswith("Failed to load resource")) else None)
    opened.login()
    yield opened
    context.close()


def _shown_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#agents tr").evaluate_all(
        "rows => rows.map(row => row.dataset.agentId)")
    return ids


def _api_ids(stack: Stack, **params: Any) -> tuple[list[str], int]:
    with stack.api() as api:
        answer = api.get("/api/v1/agents", params=params)
    assert answer.status_code == 200, answer.text
    return [agent["id"] for agent in answer.json()], int(answer.headers["X-Total-Count"])


def _shows(page: Page, stack: Stack, size: int = 50, page_number: int = 1,
           **params: Any) -> None:
    """Wait until the page shows what the API lists for ``params``."""
    wanted, total = _api_ids(stack, limit=size, offset=(page_number - 1) * size, **params)
    wait_until(lambda: _shown_ids(page) == wanted,
               f"the page to show {params} page {page_number}: {wanted[:3]}...")
    pages = max(1, -(-total // size))
    expect(page.locator("#page-of")).to_have_text(f"Page {page_number} of {pages}")


def _summary(stack: Stack, **params: Any) -> dict[str, Any]:
    with stack.api() as api:
        answer = api.get("/api/v1/fleet/summary", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _wakeups(stack: Stack) -> list[dict[str, Any]]:
    with stack.api() as api:
        answer = api.get("/api/v1/wakeups", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    result: list[dict[str, Any]] = answer.json()
    return result


def _posts(page: Page, path: str) -> list[Request]:
    """Every POST this page sends to ``path`` from now on."""
    seen: list[Request] = []
    page.on("request", lambda r: seen.append(r) if (
        r.method == "POST" and r.url.split("?")[0].endswith(path)) else None)
    return seen


def test_paging_sorting_filters_and_totals_follow_the_api_and_the_url(tab: Console) -> None:
    page, stack = tab.page, tab.stack
    _shows(page, stack, sort="id")
    fleet = _summary(stack)["fleet"]
    expect(page.locator("#fleet-total")).to_have_text(f"{fleet['total']} agents")
    for name, count in fleet["presence"].items():
        expect(page.locator(f"#fleet-presence [data-presence={name}]")).to_have_text(
            f"{name} {count}")
    expect(page.locator("#matching-row")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-agents-page.png"))

    # Page size, next page, the URL, reload and Back.
    page.select_option("#page-size", "25")
    _shows(page, stack, size=25, sort="id")
    page.locator("#page-next").click()
    _shows(page, stack, size=25, page_number=2, sort="id")
    assert re.search(r"size=25&page=2$", page.url), page.url
    expect(page.locator("#page-range")).to_have_text(f"Agents 26\u201350 of {ROWS}")
    page.reload()
    _shows(page, stack, size=25, page_number=2, sort="id")
    page.locator("#page-last").click()
    _shows(page, stack, size=25, page_number=ROWS // 25, sort="id")
    expect(page.locator("#page-next")).to_be_disabled()
    page.go_back()
    _shows(page, stack, size=25, page_number=2, sort="id")

    # Sorting: a header's button, twice for descending; kept in the URL.
    header = page.locator('th[data-sort="last_seen"]')
    header.get_by_role("button").click()
    _shows(page, stack, size=25, sort="last_seen")
    expect(header).to_have_attribute("aria-sort", "ascending")
    header.get_by_role("button").click()
    _shows(page, stack, size=25, sort="-last_seen")
    expect(header).to_have_attribute("aria-sort", "descending")
    assert "sort=-last_seen" in page.url
    page.reload()
    _shows(page, stack, size=25, sort="-last_seen")
    page.locator('th[data-sort="presence"]').get_by_role("button").click()
    _shows(page, stack, size=25, sort="presence")

    # Each filter, and the totals for it, as the API has them.
    now = time.time()
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("#filter-presence", "offline", {"presence": "offline"}),
        ("#filter-group", "lab", {"group": "lab"}),
        ("#filter-route", "websocket", {"route": "websocket"}),
        ("#filter-seen", "-24h", {"last_seen_before": now - 86400}),
        ("#filter-seen", "1h", {"last_seen_after": now - 3600}),
    ]
    for selector, value, params in cases:
        page.get_by_role("button", name="Clear filters").click()
        page.select_option(selector, value)
        _shows(page, stack, size=25, sort="presence", **params)
        matching = _summary(stack, **params)
        expect(page.locator("#matching-total")).to_have_text(f"{matching['total']} agents")
        for name, count in matching["presence"].items():
            expect(page.locator(f"#matching-presence [data-presence={name}]")).to_have_text(
                f"{name} {count}")
    page.get_by_role("button", name="Clear filters").click()
    page.fill("#filter-version", "2.0.0")
    page.locator("#filter-version").press("Enter")
    page.locator("#filter-version").blur()
    _shows(page, stack, size=25, sort="presence", version="2.0.0")
    page.get_by_role("button", name="Clear filters").click()
    page.fill("#search", "HOST-1")
    _shows(page, stack, size=25, sort="presence", q="HOST-1")
    assert "q=HOST-1" in page.url
    page.get_by_role("button", name="Clear filters").click()
    page.get_by_label("identity expiring soon").check()
    soon = float(page.locator("#main").get_attribute("data-expiring-soon") or "nan")
    _shows(page, stack, size=25, sort="presence", expiring_within=soon)
    # Filters together, from a bookmarked URL.
    page.goto(f"{tab.url}/console/agents?group=floor-1&presence=online&sort=-id")
    _shows(page, stack, sort="-id", group="floor-1", presence="online")
    expect(page.locator("#filter-group")).to_have_value("floor-1")
    expect(page.locator("#filter-presence")).to_have_value("online")
    assert tab.errors == []


def test_select_all_matching_wakes_exactly_the_filter_and_large_actions_ask_first(
        tab: Console) -> None:
    page, stack = tab.page, tab.stack
    wakes = _posts(page, "/api/v1/wakeups")
    before = len(_wakeups(stack))

    # A group of 40 among 300: "all" is those 40, under the threshold: no question.
    page.select_option("#filter-group", "floor-2")
    _shows(page, stack, group="floor-2")
    page.get_by_role("button", name=f"Select all {FLOOR_2} matching").click()
    expect(page.locator("#selection")).to_have_text(f"All {FLOOR_2} matching agents selected")
    page.get_by_role("button", name="Wake up").click()
    expect(page.locator("#feedback")).to_contain_text(
        f"Wake-up sent to group floor-2 ({FLOOR_2} agents)")
    newest = _wakeups(stack)[0]
    wakeup = stack.wakeup(newest["id"])
    assert sorted(t["agent_id"] for t in wakeup["targets"]) == [
        f"pc-{n:03d}" for n in range(FLOOR_2)]

    # A filter over the threshold: the question names the count; Cancel sends
    # nothing. A new filter clears the selection made under the old one.
    page.select_option("#filter-group", "lab")
    _shows(page, stack, group="lab")
    expect(page.locator("#selection")).to_have_text("Nothing selected")
    page.get_by_role("button", name=f"Select all {LAB} matching").click()
    expect(page.locator("#selection")).to_have_text(f"All {LAB} matching agents selected")
    sent = len(wakes)
    page.get_by_role("button", name="Wake up").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text(f"Wake up {LAB} agents?")
    expect(dialog).to_contain_text("Every agent matching group lab.")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#feedback")).to_contain_text("Nothing was sent.")
    assert len(wakes) == sent
    assert len(_wakeups(stack)) == before + 1

    # Wake-on-LAN follows the same rule: 55 machines ask first; Cancel sends nothing.
    wols = _posts(page, "/api/v1/wol")
    page.get_by_role("button", name="Wake on LAN").click()
    expect(page.locator("#wol-targets tr")).to_have_count(LAB)
    page.get_by_role("button", name="Send magic packets").click()
    expect(dialog.locator("h2")).to_have_text(f"Send magic packets to {LAB} machines?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator("#feedback")).to_contain_text("No magic packet was sent.")
    assert wols == []
    page.get_by_role("button", name="Cancel").click()  # the WoL panel

    # A filter that is more than a group wakes exactly its agents, as the
    # test counts them from the rows it wrote.
    page.select_option("#filter-group", "")
    page.select_option("#filter-presence", "online")
    page.select_option("#filter-route", "primary")
    by_route = sorted(r["id"] for r in _rows(time.time()) if r["route"] == "primary"
                      and r["presence"] == "online" and time.time() - r["last_seen"] < 1000)
    assert 0 < len(by_route) <= 50, len(by_route)
    _shows(page, stack, presence="online", route="primary")
    routed = len(by_route)
    page.get_by_role("button", name=f"Select all {routed} matching").click()
    page.get_by_role("button", name="Wake up").click()
    expect(page.locator("#feedback")).to_contain_text(f"({routed} agents)")
    newest = _wakeups(stack)[0]
    assert newest["target_kind"] == "filter"
    assert newest["target"] == [{"presence": ["online"], "route": ["primary"]}]
    assert sorted(t["agent_id"] for t in stack.wakeup(newest["id"])["targets"]) == by_route
    expect(page.locator("#progress-link")).to_have_text(
        "Wake-up of agents matching presence online, route primary")

    # The whole fleet always asks, naming its size; Cancel sends nothing.
    page.get_by_role("button", name="Clear filters").click()
    _shows(page, stack)
    fleet_size = _summary(stack)["fleet"]["total"]
    page.get_by_role("button", name=f"Select all {fleet_size} agents").click()
    expect(page.locator("#selection")).to_have_text(
        f"All {fleet_size} agents in the fleet selected")
    sent = len(wakes)
    page.get_by_role("button", name="Wake up").click()
    expect(dialog.locator("h2")).to_have_text(f"Wake up {fleet_size} agents?")
    expect(dialog).to_contain_text("Every agent in the fleet.")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator("#feedback")).to_contain_text("Nothing was sent.")
    assert len(wakes) == sent
    # Wake-on-LAN of more than one request's 64 machines says so, and sends nothing.
    page.get_by_role("button", name="Wake on LAN").click()
    expect(page.locator("#feedback")).to_contain_text("at most 64 machines per request")
    assert wols == []
    # Unticking one agent keeps the rest of the page ticked, not the fleet.
    page.locator("#agents tr").first.get_by_role("checkbox").uncheck()
    expect(page.locator("#selection")).to_contain_text("49 agents selected")
    assert tab.errors == []


def test_a_live_presence_change_redraws_its_row_without_a_reload(tab: Console) -> None:
    page, stack = tab.page, tab.stack
    agent = stack.start_agent("live-1", groups=("live",))
    stack.wait_agent("live-1", "online")
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/api/v1/agents" in r.url else None)
    page.goto(f"{tab.url}/console/agents?group=live")
    row = page.locator('tr[data-agent-id="live-1"]')
    expect(row.locator("td.presence")).to_have_text("online")
    expect(page.locator("#matching-presence [data-presence=online]")).to_have_text("online 1")
    page.evaluate("window.notReloaded = true")
    agent.stop()
    expect(row.locator("td.presence")).to_have_text("offline", timeout=20_000)
    expect(page.locator("#matching-presence [data-presence=offline]")).to_have_text(
        "offline 1", timeout=10_000)
    assert page.evaluate("window.notReloaded") is True
    # Every list it read was one page, never the whole fleet.
    lists = [url for url in reads if "/api/v1/agents?" in url]
    assert lists
    assert all("limit=" in url for url in lists), lists
    assert tab.errors == []


def test_wake_by_filter_through_the_api_resolves_when_accepted(fleet: Stack) -> None:
    with fleet.api() as api:
        revoked = api.post("/api/v1/agents/pc-299/revoke", json={"reason": "test"})
        assert revoked.status_code == 204, revoked.text
        body = {"filter": {"q": "PC-29"}}
        first = api.post("/api/v1/wakeups", json=body, headers={"Idempotency-Key": "k-29"})
        assert first.status_code == 202, first.text
        view = first.json()
        assert view["target_kind"] == "filter"
        assert view["target"] == [{"q": "PC-29"}]
        # pc-290 ... pc-298: the revoked pc-299 is left out.
        assert sorted(t["agent_id"] for t in fleet.wakeup(view["id"])["targets"]) == [
            f"pc-{n}" for n in range(290, 299)]
        again = api.post("/api/v1/wakeups", json=body, headers={"Idempotency-Key": "k-29"})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == view["id"]
        other = api.post("/api/v1/wakeups", json={"filter": {"q": "pc-28"}},
                         headers={"Idempotency-Key": "k-29"})
        assert other.status_code == 422, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        for refused, status, code in (
                ({"filter": {"group": ["nobody"]}}, 404, "no_agents"),
                ({"filter": {"q": "pc"}, "group": "lab"}, 400, "bad_target"),
                ({"filter": {"colour": ["red"]}}, 422, None),
                ({"filter": {"presence": ["asleep"]}}, 422, None)):
            answer = api.post("/api/v1/wakeups", json=refused)
            assert answer.status_code == status, (refused, answer.text)
            if code is not None:
                assert answer.json()["error"]["code"] == code, answer.text
        listed = api.get("/api/v1/wakeups", params={"target_kind": "filter"})
        assert listed.status_code == 200, listed.text
        assert view["id"] in [w["id"] for w in listed.json()]
        assert {w["target_kind"] for w in listed.json()} == {"filter"}
