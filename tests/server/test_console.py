"""The web console in a real browser: Debian's chromium driven by Playwright,
against a whole stack (broker, server, agents) on loopback."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.server.conftest import Stack
from tests.support.processes import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
PASSWORD = "correct horse battery staple"
USER = "admin"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _spki_pin(cert: Path) -> str:
    """Chromium's pin for a certificate's key: base64 SHA-256 of its SPKI."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class Console:
    """A logged-out browser tab on a stack's console, and the script errors
    and policy violations it logged."""

    stack: Stack
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.stack.server.url

    def login(self, user: str = USER, password: str = PASSWORD) -> None:
        """Log in through the form and land on the agents page."""
        self.page.goto(f"{self.url}/")
        self.submit_login(user, password)
        self.page.wait_for_url(re.compile(r"/console/agents$"))
        expect(self.page.locator("#live")).to_have_attribute("data-state", "open")

    def submit_login(self, user: str, password: str) -> int:
        """Fill and send the login form; the answer's HTTP status."""
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        with self.page.expect_response(lambda r: r.request.method == "POST") as answer:
            self.page.click("button[type=submit]")
        return answer.value.status

    def session_cookie(self) -> str:
        return next(c["value"] for c in self.context.cookies() if c["name"] == "epns_session")


def _set_password(stack: Stack) -> None:
    stack.server.cli("admin", "password", USER, env={"EPNS_ADMIN_PASSWORD": PASSWORD})


@pytest.fixture
def console() -> Iterator[Callable[[Stack], Console]]:
    """Open a console on a stack: ``console(stack)``; one browser per stack."""
    if not CHROMIUM.exists():
        pytest.fail("the console tests need Debian's chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browsers: list[Browser] = []

        def open_console(stack: Stack) -> Console:
            _set_password(stack)
            # Chromium does not read a CA file, and importing the test CA into
            # an NSS database needs more tools. Instead the browser accepts the
            # one key this test server presents, and nothing else untrusted.
            pin = _spki_pin(stack.pki / "broker.crt")
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--ignore-certificate-errors-spki-list={pin}"])
            browsers.append(browser)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            opened = Console(stack, context, context.new_page())
            opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
            # Console errors include refused scripts and styles (the CSP); a
            # refused request is logged too, and some tests provoke those.
            opened.page.on("console", lambda message: opened.errors.append(message.text) if (
                message.type == "error"
                and not message.text.startswith("Failed to load resource")) else None)
            return opened

        yield open_console
        for browser in browsers:
            browser.close()


def test_login_refuses_wrong_passwords_then_throttles(
        make_stack: Callable[..., Stack], console: Callable[[Stack], Console]) -> None:
    stack = make_stack(console__failed_login_limit="3")
    tab = console(stack)
    tab.page.goto(f"{tab.url}/console/agents")
    tab.page.wait_for_url(re.compile(r"/console/login\?next=/console/agents$"))
    for _ in range(3):
        assert tab.submit_login(USER, "wrong") == 401
        expect(tab.page.locator("#login-error")).to_contain_text("Wrong user name or password")
    # The right password too, from this browser that never logged in: it waits
    # (test_console_sessions.py: the owner's own browser and other addresses do not).
    assert tab.submit_login(USER, PASSWORD) == 429
    expect(tab.page.locator("#login-error")).to_contain_text(
        re.compile(r"Too many failed logins\. Wait \d+ s, then try again\."))
    # Another user from the same address is judged on its own.
    assert tab.submit_login("someone-else", PASSWORD) == 401
    assert tab.errors == []


def test_wake_up_in_the_console_reaches_synced_without_a_reload(
        stack: Stack, console: Callable[[Stack], Console]) -> None:
    for agent_id in ("a1", "a2"):
        stack.start_agent(agent_id, groups=("lab",))
        stack.wait_agent(agent_id, "online")
    tab = console(stack)
    tab.login()
    page = tab.page
    row = page.locator('tr[data-agent-id="a1"]')
    expect(row.locator("td.presence")).to_have_text("online")
    page.evaluate("window.notReloaded = true")

    row.get_by_label("Select a1").check()
    expect(page.locator("#selection")).to_have_text("1 agent selected: a1")
    page.get_by_role("button", name="Wake up").click()
    expect(page.locator("#feedback")).to_contain_text("Wake-up sent to a1 (1 agent)")
    expect(row.locator("td.wake")).to_have_text("synced", timeout=20_000)
    expect(page.locator("#count-satisfied")).to_have_text("1")
    assert page.evaluate("window.notReloaded") is True
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "console-wake-synced.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == PNG_MAGIC

    # A group: filtered to it, "all matching" is its two agents, woken as the
    # group; the progress panel counts both to satisfied, live.
    page.select_option("#filter-group", "lab")
    page.get_by_role("button", name="Select all 2 matching").click()
    expect(page.locator("#selection")).to_have_text("All 2 matching agents selected")
    page.get_by_role("button", name="Wake up").click()
    # Both agents are the whole fleet: the console asks first, naming them.
    expect(page.locator("#confirm h2")).to_have_text("Wake up 2 agents?")
    page.get_by_role("button", name="Wake up 2 agents").click()
    expect(page.locator("#count-total")).to_have_text("2")
    expect(page.locator("#count-satisfied")).to_have_text("2", timeout=20_000)
    expect(page.locator("#progress-state")).to_contain_text("Done: 2 of 2 synced")
    expect(page.locator('tr[data-agent-id="a2"] td.wake')).to_have_text("synced")
    assert page.evaluate("window.notReloaded") is True

    # The agent's own page: its route, its address, and the history of the wake-ups.
    with stack.api() as api:
        route = api.get("/api/v1/agents/a1").json()["route"]
    row.get_by_role("link", name="a1").click()
    page.wait_for_url(re.compile(r"/console/agents/a1$"))
    expect(page.locator("#route")).to_have_text(route)
    expect(page.locator("#interfaces")).to_contain_text("127.0.0.1")
    history = page.locator("#history")
    expect(history).to_contain_text("wake_requested")
    expect(history).to_contain_text("wake_delivered")
    expect(history).to_contain_text("sync")
    expect(page.locator("#pending")).to_have_text("None.")

    # The wake-up history, newest first, and the group wake-up per target.
    page.get_by_role("link", name="Wake-ups").click()
    wakeups = page.locator("#wakeups tr")
    expect(wakeups).to_have_count(2)
    expect(wakeups.first).to_contain_text("group lab")
    expect(wakeups.last).to_contain_text("a1")
    wakeups.first.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/console/wakeups/[0-9a-f]+$"))
    expect(page.locator("#state")).to_have_text("done")
    expect(page.locator("#targets tr")).to_have_count(2)
    for target in page.locator("#targets tr").all():
        expect(target).to_contain_text("synced")
    assert tab.errors == []


def test_api_refuses_a_console_session_without_its_csrf_token(
        stack: Stack, console: Callable[[Stack], Console]) -> None:
    stack.create_agent("a1")
    tab = console(stack)
    tab.login()
    token = tab.page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    # Wake on LAN: the preflight first; this agent never reported its MAC,
    # so the request would be refused (the API says why) and Send is off,
    # with the reason beside it.
    page = tab.page
    page.locator('tr[data-agent-id="a1"]').get_by_label("Select a1").check()
    page.get_by_role("button", name="Wake on LAN").click()
    expect(page.locator("#wol-targets tr")).to_have_count(1)
    expect(page.locator("#wol-targets")).to_contain_text("a1")
    expect(page.get_by_role("button", name="Send magic packets")).to_be_disabled()
    expect(page.locator("#wol-blocked")).to_contain_text("the MAC address of a1 is not known")
    with stack.api() as api:
        refusal = api.post("/api/v1/wol", json={"agents": ["a1"]}).json()["error"]
    assert refusal["code"] == "unknown_mac"
    # The WoL history follows new requests live. This one names its target by
    # MAC and a 127.0.0.1 address, and the server has no addresses of its own
    # configured: nothing is sent anywhere.
    page.get_by_role("link", name="Wake-on-LAN").click()
    expect(page.locator("#empty")).to_be_visible()
    with stack.api() as api:
        sent = api.post("/api/v1/wol", json={"targets": [
            {"mac": "aa:bb:cc:dd:ee:42", "address": "127.0.0.1", "prefix": 8}]})
        assert sent.status_code == 202, sent.text
    history = page.locator("#wol-history tr")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("aa:bb:cc:dd:ee:42")
    expect(history).to_contain_text("sent, waiting")

    cookie = {"Cookie": f"epns_session={tab.session_cookie()}"}
    with stack.server.client() as http:
        refused = http.post("/api/v1/wakeups", json={"agents": ["a1"]}, headers=cookie)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "csrf"
        wrong = http.post("/api/v1/wakeups", json={"agents": ["a1"]},
                          headers={**cookie, "X-CSRF-Token": "not-it"})
        assert wrong.status_code == 403, wrong.text
        accepted = http.post("/api/v1/wakeups", json={"agents": ["a1"]},
                             headers={**cookie, "X-CSRF-Token": token})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["requested_by"] == f"user:{USER}"
        # Logging out needs the token too; afterwards the cookie is worth nothing.
        assert http.post("/console/logout", data={"csrf": "not-it"},
                         headers=cookie).status_code == 403
    saved = tab.session_cookie()
    tab.page.get_by_role("button", name="Log out").click()
    tab.page.wait_for_url(re.compile(r"/console/login\?bye=1$"))
    expect(tab.page.get_by_text("You are logged out.")).to_be_visible()
    assert not any(c["name"] == "epns_session" for c in tab.context.cookies())
    # A copy of the cookie taken before the logout is refused after it.
    with stack.server.client() as http:
        after = http.get("/api/v1/agents", headers={"Cookie": f"epns_session={saved}"})
        assert after.status_code == 401
    assert tab.errors == []


def test_settings_forms_save_and_show_the_servers_refusal(
        stack: Stack, console: Callable[[Stack], Console]) -> None:
    tab = console(stack)
    tab.login()
    page = tab.page
    page.get_by_role("link", name="Settings").click()
    hints = page.locator("#form-hints")
    expect(page.locator("#hints-interval")).to_have_value("600")
    page.fill("#hints-interval", "120")
    page.fill("#hints-keepalive-fallback", "45")
    hints.get_by_role("button", name="Save agent hints").click()
    expect(hints.locator(".form-ok")).to_contain_text("Saved")
    page.fill("#hints-interval", "5")
    hints.get_by_role("button", name="Save agent hints").click()
    expect(hints.locator(".form-error")).to_contain_text(
        "Not saved: hints: sync_interval must be 30-604800 s")

    wol = page.locator("#form-wol")
    page.fill("#wol-ports", "9, 4000")
    page.fill("#wol-addresses", "127.255.255.255")
    wol.get_by_role("button", name="Save Wake-on-LAN settings").click()
    expect(wol.locator(".form-ok")).to_contain_text("Saved")

    notifications = page.locator("#form-notifications")
    page.fill("#notify-webhook", "ftp://127.0.0.1/hook")
    notifications.get_by_role("button", name="Save notification settings").click()
    expect(notifications.locator(".form-error")).to_contain_text(
        "webhook_url must be an http(s) URL")

    with stack.api() as api:
        assert api.get("/api/v1/settings/hints").json() == {
            "sync_interval": 120.0, "keepalive": {"fallback": 45}}
        stored = api.get("/api/v1/settings/wol").json()
        assert stored["ports"] == [9, 4000]
        assert stored["addresses"] == ["127.255.255.255"]
        assert api.get("/api/v1/settings/notifications").json()["webhook_url"] == ""
    assert tab.errors == []


def test_open_consoles_do_not_hold_up_a_server_stop(
        stack: Stack, console: Callable[[Stack], Console]) -> None:
    tab = console(stack)
    tab.login()
    started = time.monotonic()
    assert stack.server.stop() == 0
    took = time.monotonic() - started
    # The log line first: it tells a stream that held the stop up until
    # uvicorn's 5 s graceful timeout from a stop that was merely slow.
    assert not any("graceful shutdown exceeded" in line for line in stack.server.lines), took
    assert took < 4, "the event stream held the shutdown up"
    expect(tab.page.locator("#live")).to_have_attribute("data-state",
                                                        re.compile("closed|connecting"))
    assert tab.errors == []
