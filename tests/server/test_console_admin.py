"""Administration in the console, in a real browser (Chromium) against one
whole stack for the module: revoke and retire an agent, move it between
groups, API tokens (create, the secret shown once and working, revoke),
enrolment tokens (create, their uses, revoke) and the audit log (filters,
paging, the CSV export). Each flow is checked where it takes effect: the
broker, the API, the database's answers."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from epns import pki
from server_push.security.auth import token_hash
from server_push.store.models import ApiToken, AuditEntry, Base
from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import ARTIFACTS, CHROMIUM, Console, _set_password, _spki_pin

DASH = "\u2013"  # an en dash, as in the page's "Entries 1-25"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One broker, server and its agents for the whole module."""
    made = _make_stack(tmp_path_factory.mktemp("admin"), "epns", {})
    yield made
    made.stop()


@pytest.fixture(scope="module")
def tab(stack: Stack) -> Iterator[Console]:
    """One browser for the module, logged in to the stack's console."""
    if not CHROMIUM.exists():
        pytest.fail("the console tests need Debian's chromium: apt-get install chromium")
    _set_password(stack)
    pin = _spki_pin(stack.pki / "broker.crt")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--ignore-certificate-errors-spki-list={pin}"])
        context = browser.new_context(viewport={"width": 1400, "height": 900},
                                      accept_downloads=True)
        opened = Console(stack, context, context.new_page())
        opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
        opened.page.on("console", lambda message: opened.errors.append(message.text) if (
            message.type == "error"
            and not message.text.startswith("Failed to load resource")) else None)
        opened.login()
        yield opened
        browser.close()


def _insert_rows(stack: Stack, *tables: tuple[type[Base], list[dict[str, Any]]]) -> None:
    """``Stack.insert_rows`` from another thread: Playwright's sync API runs
    an event loop in this one, and the rows are written with asyncio."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(stack.insert_rows, *tables).result()


def _confirm(page: Page, title: str, button: str) -> None:
    """The confirmation dialog names the action and its object; confirm it."""
    dialog = page.locator("dialog.confirm-action")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text(title)
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_have_count(0)


def _cancel(page: Page, title: str) -> None:
    dialog = page.locator("dialog.confirm-action")
    expect(dialog.locator("h2")).to_have_text(title)
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)


def test_revoke_on_the_agent_page_cuts_the_agent_off(stack: Stack, tab: Console) -> None:
    agent = stack.start_agent("rv1")
    stack.wait_agent("rv1", "online")
    page = tab.page
    page.goto(f"{tab.url}/console/agents/rv1")
    expect(page.locator("#presence")).to_have_text("online")
    page.fill("#revoke-reason", "laptop stolen")
    page.get_by_role("button", name="Revoke…").click()
    _cancel(page, "Revoke agent rv1?")
    with stack.api() as api:
        assert api.get("/api/v1/agents/rv1").json()["revoked"] is False
    seen = len(agent.lines)

    page.get_by_role("button", name="Revoke…").click()
    expect(page.locator("dialog.confirm-action")).to_contain_text('"laptop stolen"')
    _confirm(page, "Revoke agent rv1?", "Revoke rv1")
    expect(page.locator("#feedback")).to_contain_text("Agent rv1 revoked")
    expect(page.locator("#presence")).to_contain_text("revoked")
    expect(page.locator("#revoked-note")).to_be_visible()
    expect(page.locator("#revoke-part")).to_be_hidden()
    # Where it takes effect (as test_revocation asserts for the API): the
    # broker closes the connection and refuses every reconnect.
    assert "agent:rv1" in (stack.pki / pki.REVOKED).read_text()
    stack.broker.log_contains(r"disconnected client=rv1 graceful=False will=True")
    agent.log_contains(r"route_failed .*step=mqtt .*CONNACK 5", after=seen, timeout=15)
    stack.broker.log_contains(r"refused client=rv1 .*revoked")
    assert stack.wait_agent("rv1", "offline")["revoked"] is True
    expect(page.locator("#history")).to_contain_text("laptop stolen")
    with stack.api() as api:
        audit = api.get("/api/v1/audit", params={"action": "agent_revoke"}).json()
    assert [(a["actor"], a["targets"], a["outcome"]) for a in audit] == [
        ("user:admin", ["rv1"], "laptop stolen")]
    assert tab.errors == []


def test_retire_on_the_agent_page_keeps_the_history(stack: Stack, tab: Console) -> None:
    stack.start_agent("rt1")
    stack.start_agent("keep1")
    stack.wait_agent("rt1", "online")
    stack.wait_agent("keep1", "online")
    with stack.api() as api:
        before = api.get("/api/v1/fleet/summary").json()["total"]
    page = tab.page
    page.goto(f"{tab.url}/console/agents/rt1")
    expect(page.locator("#presence")).to_have_text("online")
    page.get_by_role("button", name="Retire…").click()
    dialog = page.locator("dialog.confirm-action")
    expect(dialog).to_contain_text("its connection is closed now")
    expect(dialog).to_contain_text("Its history is kept")
    expect(dialog).to_contain_text("It leaves the agent list and the totals")
    _confirm(page, "Retire agent rt1?", "Retire rt1")
    expect(page.locator("#feedback")).to_contain_text("Agent rt1 retired")
    banner = page.locator("#retired-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Retired")
    expect(banner).to_contain_text("Its history is kept below")
    # A retired agent's page offers no actions, and still shows its history.
    expect(page.locator("#admin")).to_be_hidden()
    expect(page.locator("#wake-actions")).to_be_hidden()
    expect(page.locator("#history")).to_contain_text("retired")
    expect(page.locator("#history")).to_contain_text("online")
    stack.broker.log_contains(r"disconnected client=rt1 graceful=False will=True")
    with stack.api() as api:
        shown = api.get("/api/v1/agents/rt1").json()
        listed = [a["id"] for a in api.get("/api/v1/agents").json()]
        after = api.get("/api/v1/fleet/summary").json()["total"]
    assert shown["revoked"] is True
    assert shown["retired_at"] is not None
    assert "rt1" not in listed
    assert "keep1" in listed
    assert after == before - 1
    # It survives a reload, marked retired.
    page.reload()
    expect(page.locator("#retired-banner")).to_be_visible()
    expect(page.locator("#presence")).to_contain_text("retired")
    assert tab.errors == []


def test_groups_are_edited_and_saved_on_the_agent_page(stack: Stack, tab: Console) -> None:
    stack.create_agent("gr1", groups=("old", "lab"))
    stack.create_agent("gr2", groups=("floor-2",))
    page = tab.page
    page.goto(f"{tab.url}/console/agents/gr1")
    chips = page.locator("#group-chips")
    expect(chips.locator("li > span")).to_have_text(["old", "lab"])
    # Existing group names are suggested, with their sizes.
    expect(page.locator("#group-names option[value='floor-2']")).to_have_count(1)
    page.get_by_role("button", name="Remove group old").click()
    page.fill("#group-new", "bad name")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#groups-error")).to_contain_text('"bad name" is not a group name')
    page.fill("#group-new", "floor-2")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#groups-error")).to_be_hidden()
    expect(page.locator("#groups-state")).to_have_text("Unsaved changes")
    with stack.api() as api:  # nothing is saved before Save
        assert api.get("/api/v1/agents/gr1").json()["groups"] == ["old", "lab"]
    page.get_by_role("button", name="Save groups").click()
    expect(page.locator("#feedback")).to_contain_text("Groups of gr1 saved: lab, floor-2")
    expect(page.locator("#groups")).to_have_text("lab, floor-2")
    expect(page.locator("#groups-save")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-agent-admin.png"), full_page=True)
    with stack.api() as api:
        assert api.get("/api/v1/agents/gr1").json()["groups"] == ["lab", "floor-2"]
        assert [a["id"] for a in api.get("/api/v1/agents",
                                         params={"group": "floor-2"}).json()] == ["gr1", "gr2"]
        audit = api.get("/api/v1/audit", params={"action": "agent_groups",
                                                 "target": "gr1"}).json()
    assert [a["outcome"] for a in audit] == ["groups: lab, floor-2"]
    assert tab.errors == []


def test_api_tokens_are_created_shown_once_and_revoked(stack: Stack, tab: Console) -> None:
    page = tab.page
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url(re.compile(r"/console/tokens$"))
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token .form-error")).to_have_text(
        "Not created: give the token a name: who or what will use it.")
    page.fill("#token-name", "backup-job")
    page.select_option("#token-expiry", "30")
    started = time.time()
    page.get_by_role("button", name="Create token").click()
    made = page.locator("#made")
    expect(made).to_be_visible()
    expect(made).to_contain_text("it is shown only once")
    expect(made.get_by_role("button", name="Copy token")).to_be_visible()
    secret = page.locator("#made-token").input_value()
    assert secret.startswith("epns_")
    expect(page.locator("#made-example")).to_contain_text(f"Bearer {secret}")
    with stack.server.client(secret) as api:
        assert api.get("/api/v1/agents").status_code == 200
    with stack.api() as api:
        listed = {t["name"]: t for t in api.get("/api/v1/tokens").json()}
    token = listed["backup-job"]
    assert started + 30 * 86400 - 5 <= token["expires_at"] <= time.time() + 30 * 86400
    assert token["created_by"] == "user:admin"
    page.get_by_role("button", name="I have copied it: hide it").click()
    expect(made).to_be_hidden()
    assert page.locator("#made-token").input_value() == ""

    page.reload()  # the list shows its use since
    row = page.locator(f"#tokens tr[data-id='{token['id']}']")
    expect(row).to_contain_text("backup-job")
    expect(row).to_contain_text("active")
    expect(row.locator("td").nth(3)).not_to_have_text("never")
    row.get_by_role("button", name="Revoke backup-job").click()
    _cancel(page, 'Revoke API token "backup-job"?')
    with stack.server.client(secret) as api:
        assert api.get("/api/v1/agents").status_code == 200
    row.get_by_role("button", name="Revoke backup-job").click()
    _confirm(page, 'Revoke API token "backup-job"?', 'Revoke "backup-job"')
    expect(page.locator("#feedback")).to_contain_text('API token "backup-job" revoked')
    expect(row).to_contain_text("revoked")
    with stack.server.client(secret) as api:
        refused = api.get("/api/v1/agents")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "bad_token"
    assert tab.errors == []


def test_api_token_refusals_are_shown_and_an_expired_token_is_refused(
        stack: Stack, tab: Console) -> None:
    # A token past its expiry (written straight into the database: no test
    # waits out a real expiry).
    expired = "epns_expired-test-token"
    _insert_rows(stack, (ApiToken, [{
        "id": "e" * 32, "name": "old-job", "token_hash": token_hash(expired),
        "created_at": time.time() - 7200, "created_by": "cli",
        "expires_at": time.time() - 60}]))
    with stack.server.client(expired) as api:
        answer = api.get("/api/v1/agents")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "token_expired"
    assert "'old-job' expired at" in answer.json()["error"]["message"]

    page = tab.page
    page.goto(f"{tab.url}/console/tokens")
    expect(page.locator(f"#tokens tr[data-id='{'e' * 32}']")).to_contain_text("expired")
    # Revoked on the command line behind the page's back: the page says why
    # its revoke is refused.
    row = page.locator(f"#tokens tr[data-id='{'e' * 32}']")
    stack.server.cli("token", "revoke", "e" * 32)
    row.get_by_role("button", name="Revoke old-job").click()
    _confirm(page, 'Revoke API token "old-job"?', 'Revoke "old-job"')
    expect(page.locator("#feedback .message.error")).to_contain_text(
        f"Revoking API token \"old-job\" failed: API token '{'e' * 32}' (old-job) is "
        "revoked already")
    # A date in the past is refused before it is sent.
    page.fill("#token-name", "late")
    page.select_option("#token-expiry", "date")
    page.fill("#token-date", "2020-01-01")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token .form-error")).to_contain_text("2020-01-01 is past")
    assert [e for e in tab.errors if "401" not in e] == []


def test_enrolment_token_uses_and_revoke(stack: Stack, tab: Console) -> None:
    page = tab.page
    page.get_by_role("link", name="Enrolments").click()
    page.fill("#token-groups", "shop")
    page.fill("#token-uses", "two")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token .form-error")).to_contain_text(
        '"two" is not a number of machines')
    page.fill("#token-uses", "1")
    page.fill("#token-agent", "desk 7")
    page.get_by_role("button", name="Create token").click()
    # The server's own refusal, naming the field.
    expect(page.locator("#new-token .form-error")).to_contain_text(
        re.compile(r"^Not created: agent_id: String should match pattern"))
    page.fill("#token-agent", "desk-7")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#made")).to_be_visible()
    expect(page.locator("#made")).to_contain_text("It is shown only now")
    expect(page.get_by_role("button", name="Copy command")).to_be_visible()
    command = page.locator("#made-enrol").input_value()
    assert command.endswith(" --id desk-7")
    secret = command.split("--token ")[1].split()[0]
    with stack.api() as api:
        made = next(t for t in api.get("/api/v1/enrol-tokens").json()
                    if t["agent_id"] == "desk-7")
    assert (made["max_uses"], made["groups"], made["approval"]) == (1, ["shop"], False)
    row = page.locator(f"#tokens tr[data-id='{made['id']}']")
    expect(row).to_contain_text("0 of 1")
    expect(row).to_contain_text("desk-7")

    csr = pki.create_agent_csr("x")[1].decode()
    with stack.server.client() as client:
        enrolled = client.post("/api/v1/enrol", json={
            "token": secret, "agent_id": "desk-7", "hostname": "Desk-7.example",
            "machine": "ab" * 32, "csr": csr})
    assert enrolled.status_code == 201, enrolled.text
    page.reload()
    expect(row).to_contain_text("1 of 1")
    row.get_by_role("button", name=f"Uses of token {made['id'][:8]}").click()
    uses = page.locator(f"#tokens tr[data-uses-of='{made['id']}']")
    expect(uses).to_contain_text("enrolled")
    expect(uses).to_contain_text("desk-7")
    expect(uses).to_contain_text("Desk-7.example")
    expect(uses).to_contain_text("127.0.0.1")
    expect(uses.locator(f"span[title='{'ab' * 32}']")).to_have_text("abababababab…")

    row.get_by_role("button", name=f"Revoke token {made['id'][:8]}").click()
    expect(page.locator("dialog.confirm-action")).to_contain_text(
        "It has enrolled 1 machine(s)")
    _confirm(page, f"Revoke enrolment token {made['id'][:8]}?", f"Revoke token {made['id'][:8]}")
    expect(page.locator("#feedback")).to_contain_text("it enrols no one any more")
    expect(row).to_contain_text("revoked")
    expect(uses).to_contain_text("Desk-7.example")  # the uses stay open across the reload
    with stack.api() as api:
        assert api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["state"] == "revoked"
    assert tab.errors == []


def test_audit_log_filters_pages_and_exports_the_same_rows(
        stack: Stack, tab: Console, tmp_path: Path) -> None:
    now = time.time()
    _insert_rows(stack, (AuditEntry, [
        {"at": now - 1000 + n, "actor": "token:bulk", "action": "wakeup",
         "targets": [f"b{n % 3}"], "outcome": f"entry {n}", "ref": None}
        for n in range(60)]))
    page = tab.page
    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url(re.compile(r"/console/audit"))
    expect(page.locator("#actions option[value='wakeup']")).to_have_count(1)
    page.fill("#f-actor", "token:bulk")
    page.select_option("#f-limit", "25")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#shown")).to_have_text(f"Entries 1{DASH}25 of 60")
    expect(page.locator("#entries tr").first).to_contain_text("entry 59")  # newest first
    page.get_by_role("button", name="Next page →").click()
    expect(page.locator("#shown")).to_have_text(f"Entries 26{DASH}50 of 60")
    page.get_by_role("button", name="Next page →").click()
    expect(page.locator("#shown")).to_have_text(f"Entries 51{DASH}60 of 60")
    expect(page.get_by_role("button", name="Next page →")).to_be_disabled()

    # Target and a time range: b1's entries among the newest 30.
    page.fill("#f-target", "b1")
    page.fill("#f-since", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 1000 + 30)))
    page.get_by_role("button", name="Apply filters").click()
    expected = [f"entry {n}" for n in range(59, 29, -1) if n % 3 == 1]
    count = len(expected)
    expect(page.locator("#shown")).to_have_text(f"Entries 1{DASH}{count} of {count}")
    expect(page.locator("#entries td.outcome")).to_have_text(expected)
    assert "target=b1" in page.url  # the view is in the address: reload keeps it
    page.reload()
    expect(page.locator("#entries td.outcome")).to_have_text(expected)
    expect(page.locator("#f-target")).to_have_value("b1")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    saved = tmp_path / "audit.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [r["outcome"] for r in rows] == expected
    assert {(r["actor"], r["action"], r["targets"]) for r in rows} == {
        ("token:bulk", "wakeup", '["b1"]')}

    # A filter the API refuses is shown with its reason; nothing matching says so.
    page.fill("#f-target", "not an id!")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#filter-error")).to_contain_text("Loading the audit log failed:")
    page.fill("#f-target", "")
    page.fill("#f-actor", "token:nobody")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#no-entries")).to_be_visible()
    expect(page.locator("#shown")).to_have_text("0 of 0")
    page.get_by_role("button", name="Clear").click()  # every filter, 50 a page
    expect(page.locator("#f-since")).to_have_value("")
    page.fill("#f-actor", "token:bulk")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#shown")).to_have_text(f"Entries 1{DASH}50 of 60")
    page.screenshot(path=str(ARTIFACTS / "console-audit.png"), full_page=True)
    assert [e for e in tab.errors if "422" not in e] == []
