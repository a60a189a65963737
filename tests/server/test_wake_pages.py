"""Cancelling a wake-up, the offline hint of a waiting target, and the
Wake-on-LAN Send button that the preflight turns off: one real broker, server
and agents for the module, and Chromium for the console."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import expect

from server_push.store.models import Agent
from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture
from tests.support.processes import wait_until

# The browser's hours and minutes of a UNIX time, as the page writes them.
CLOCK = ("(at) => new Date(at * 1000).toLocaleTimeString([], "
         "{ hour: '2-digit', minute: '2-digit' })")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module: each test uses agents of its own."""
    made = _make_stack(tmp_path_factory.mktemp("cancel"), "epns", {})
    yield made
    made.stop()


def _post(stack: Stack, path: str, status: int, body: Any = None) -> dict[str, Any]:
    with stack.api() as api:
        answer = api.post(path, json=body)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _wake(stack: Stack, *agents: str) -> dict[str, Any]:
    return _post(stack, "/api/v1/wakeups", 202, {"agents": list(agents)})


def _cancel(stack: Stack, wakeup_id: str, status: int = 200) -> dict[str, Any]:
    return _post(stack, f"/api/v1/wakeups/{wakeup_id}/cancel", status)


def _offline_agent(stack: Stack, agent_id: str) -> None:
    """An agent that was online once (the server knows it) and is down now."""
    agent = stack.start_agent(agent_id)
    stack.wait_agent(agent_id, "online")
    agent.log_contains(r"sync_done .*reason=connect")
    agent.stop()
    stack.agents.remove(agent)
    stack.wait_agent(agent_id, "offline")


def _audit(stack: Stack, action: str, ref: str) -> dict[str, Any]:
    with stack.api() as api:
        entries = api.get("/api/v1/audit", params={"action": action}).json()
    return next(e for e in entries if e["ref"] == ref)


def _target(view: dict[str, Any], agent_id: str) -> dict[str, Any]:
    return next(t for t in view["targets"] if t["agent_id"] == agent_id)


def _synced_after(stack: Stack, agent_id: str, at: float) -> Callable[[], bool]:
    def check() -> bool:
        with stack.api() as api:
            seen = api.get(f"/api/v1/agents/{agent_id}").json()
        return (seen.get("last_sync_at") or 0) > at
    return check


def test_a_cancelled_wakeup_of_an_offline_agent_does_not_count_when_it_comes_back(
        stack: Stack) -> None:
    _offline_agent(stack, "off1")
    wakeup = _wake(stack, "off1")
    waiting = _target(stack.wakeup(wakeup["id"]), "off1")
    assert waiting["state"] == "requested"
    assert waiting["presence_at_request"] == "offline"
    assert waiting["agent_online"] is False
    assert waiting["presence"] == "offline"
    assert waiting["last_seen"] is not None
    assert waiting["last_seen"] < wakeup["created_at"]

    cancelled = _cancel(stack, wakeup["id"])
    assert cancelled["done"] is True
    assert cancelled["cancelled_by"] == "token:tests"
    assert cancelled["counts"]["cancelled"] == 1
    assert cancelled["counts"]["requested"] == 0
    target = _target(cancelled, "off1")
    assert target["state"] == "cancelled"
    assert target["ended_at"] == cancelled["cancelled_at"]
    # The command had been published: the broker holds it for the agent.
    entry = _audit(stack, "wakeup_cancel", wakeup["id"])
    assert entry["outcome"] == ("cancelled 1 pending targets (1 not yet delivered); "
                                "0 unsent commands withdrawn")
    assert entry["targets"] == ["off1"]
    assert _audit(stack, "wakeup", wakeup["id"])["outcome"] == (
        "satisfied 0/1, expired 0/1, cancelled 1/1")

    # Idempotent: again, the same answer, and nothing new in the audit log.
    again = _cancel(stack, wakeup["id"])
    assert again == cancelled
    with stack.api() as api:
        entries = api.get("/api/v1/audit", params={"action": "wakeup_cancel"}).json()
    assert [e["ref"] for e in entries].count(wakeup["id"]) == 1

    # The agent comes back: the broker hands it the command and it syncs,
    # but neither the ack nor the sync moves the cancelled target.
    back = time.time()
    agent = stack.start_agent("off1", create=False)
    agent.log_contains(r"command_accepted .*type=wake")
    wait_until(_synced_after(stack, "off1", back), "off1's sync after it came back")
    after = stack.wakeup(wakeup["id"])
    assert _target(after, "off1")["state"] == "cancelled"
    assert after["counts"]["satisfied"] == 0
    assert _target(after, "off1")["satisfied_at"] is None
    # The agent itself is fine: a new wake-up is satisfied.
    stack.wait_wakeup(_wake(stack, "off1")["id"], "satisfied")
    with stack.api() as api:
        metrics = api.get("/api/v1/metrics").text
    assert re.search(r'state="cancelled"\} [1-9]', metrics), metrics


def test_a_command_still_in_the_outbox_is_withdrawn_and_never_reaches_the_agent(
        stack: Stack) -> None:
    _offline_agent(stack, "off2")
    stack.stop_broker()
    try:
        wakeup = _wake(stack, "off2")
        cancelled = _cancel(stack, wakeup["id"])
    finally:
        stack.start_broker()
    assert _target(cancelled, "off2")["state"] == "cancelled"
    assert _audit(stack, "wakeup_cancel", wakeup["id"])["outcome"].endswith(
        "1 unsent commands withdrawn")
    back = time.time()
    agent = stack.start_agent("off2", create=False)
    agent.log_contains(r"sync_done .*reason=connect", timeout=30)
    wait_until(_synced_after(stack, "off2", back), "off2's connect sync")
    # A wake-up made after it is delivered: had the withdrawn command gone
    # out, the broker would have handed it over first.
    stack.wait_wakeup(_wake(stack, "off2")["id"], "satisfied")
    assert agent.count(r"command_accepted .*type=wake") == 1
    assert _target(stack.wakeup(wakeup["id"]), "off2")["state"] == "cancelled"


def test_cancel_keeps_what_is_final_and_refuses_when_nothing_is_left(stack: Stack) -> None:
    stack.start_agent("on1")
    stack.wait_agent("on1", "online")
    _offline_agent(stack, "off3")
    done = _wake(stack, "on1")
    stack.wait_wakeup(done["id"], "satisfied")
    refused = _cancel(stack, done["id"], 409)["error"]
    assert refused["code"] == "wakeup_finished"
    assert refused["message"] == (f"wake-up {done['id']} has no target left to cancel: "
                                  "satisfied 1/1, expired 0/1")
    assert stack.wakeup(done["id"])["cancelled_at"] is None

    mixed = _wake(stack, "on1", "off3")
    stack.wait_wakeup(mixed["id"], "satisfied")
    cancelled = _cancel(stack, mixed["id"])
    assert _target(cancelled, "on1")["state"] == "satisfied"
    assert _target(cancelled, "off3")["state"] == "cancelled"
    assert cancelled["counts"] == {"requested": 0, "delivered": 0, "satisfied": 1,
                                   "expired": 0, "cancelled": 1}

    unknown = _cancel(stack, "0" * 32, 404)["error"]
    assert unknown == {**unknown, "code": "unknown_wakeup",
                       "message": f"no wake-up {'0' * 32!r}"}
    with stack.api() as api:
        assert api.post("/api/v1/wakeups/not-an-id!/cancel").status_code == 422


def test_the_wakeup_page_shows_an_offline_target_and_cancels_after_a_confirmation(
        stack: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    _offline_agent(stack, "off4")
    wakeup = _wake(stack, "off4")
    tab = console(stack)
    tab.login()
    page = tab.page
    page.goto(f"{tab.url}/console/wakeups/{wakeup['id']}")
    row = page.locator('#targets tr[data-agent-id="off4"]')
    expect(row.locator("td.state")).to_have_text("wake requested")
    seen = _target(stack.wakeup(wakeup["id"]), "off4")["last_seen"]
    since, until = (page.evaluate(CLOCK, at) for at in (seen, wakeup["expires_at"]))
    expect(row.locator(".offline-hint")).to_have_text(
        f"offline since {since} — will be delivered when it reconnects, until {until} (expiry)")
    expect(page.locator("#cancel-note")).to_contain_text("1 target(s) still waiting")

    # The confirmation names what it ends; "Keep it" changes nothing.
    button = page.get_by_role("button", name="Cancel wake-up")
    button.click()
    dialog = page.locator("#cancel-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("1 of 1 target(s) are still waiting")
    page.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert _target(stack.wakeup(wakeup["id"]), "off4")["state"] == "requested"

    button.click()
    dialog.get_by_role("button", name="Cancel wake-up").click()
    expect(row.locator("td.state")).to_have_text("cancelled")
    expect(page.locator("#state")).to_have_text(re.compile(r"^cancelled by \S+ at "))
    expect(row.locator(".offline-hint")).to_have_count(0)
    expect(page.locator("#cancel-wakeup")).to_be_hidden()
    view = stack.wakeup(wakeup["id"])
    assert _target(view, "off4")["state"] == "cancelled"
    assert view["cancelled_by"] != "token:tests"  # the console's admin
    assert tab.errors == []


def test_wol_send_is_off_with_the_reason_while_no_packet_would_go_out(
        stack: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    # A machine known by its last presence: MAC and address in 198.18.5.0/24,
    # where no agent is online, and the settings name no server addresses.
    # (In a thread: Playwright's event loop runs in this one.)
    with ThreadPoolExecutor(1) as thread:
        thread.submit(stack.insert_rows, (Agent, [{
            "id": "sleeper", "groups": [], "auth": "certificate", "created_at": time.time(),
            "presence": "offline", "presence_at": time.time(), "interfaces": [
                {"address": "198.18.5.7", "prefix": 24, "mac": "aa:bb:cc:dd:ee:07"}]}])).result()
    with stack.api() as api:
        assert api.put("/api/v1/settings/wol", json={"addresses": []}).status_code == 200
    tab = console(stack)
    tab.login()
    page = tab.page
    page.locator('tr[data-agent-id="sleeper"]').get_by_label("Select sleeper").check()
    page.get_by_role("button", name="Wake on LAN").click()
    expect(page.locator("#wol-targets tr")).to_have_count(1)
    send = page.get_by_role("button", name="Send magic packets")
    expect(send).to_be_disabled()
    expect(page.locator("#wol-blocked")).to_have_text(
        "No magic packet would go out: no relay agent is online in 198.18.5.0/24, and the "
        "settings page names no server addresses: no packet goes out.")
    expect(send).to_have_attribute("aria-describedby", "wol-blocked")

    # With a server address configured the server's own packets go out: Send is on.
    with stack.api() as api:
        answer = api.put("/api/v1/settings/wol", json={"addresses": ["127.0.0.1"]})
        assert answer.status_code == 200, answer.text
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_role("button", name="Wake on LAN").click()
    expect(send).to_be_enabled()
    expect(page.locator("#wol-blocked")).to_be_hidden()
    with stack.api() as api:
        assert api.put("/api/v1/settings/wol", json={"addresses": []}).status_code == 200

    # The Wake-on-LAN page: sleeper's subnet has no relay, in a clear warning.
    page.goto(f"{tab.url}/console/wol")
    row = page.locator('#subnets tr[data-subnet="198.18.5.0/24"]')
    expect(row.locator("td.warning")).to_have_text(
        "no relay: every agent in 198.18.5.0/24 is asleep or offline (1 known); Wake-on-LAN "
        "reaches it only through the server's own addresses")
    expect(page.locator("#subnet-warnings")).to_contain_text(
        "subnet(s) have no relay: every agent there is asleep or offline")
    expect(page.locator("#subnet-warnings")).to_contain_text("198.18.5.0/24")
    expect(page.locator("#keep-awake-state")).to_contain_text("Keep-awake is off")
    assert tab.errors == []
