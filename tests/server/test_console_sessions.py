"""Console sessions held on the server, and a login throttle that an attacker
cannot turn against the owner: against one real broker + server for the
module, with HTTP clients bound to different loopback addresses (127.0.0.x)
to be different sources, and a real browser for the account page."""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture

USER = "admin"
PASSWORD = "correct horse battery staple"
LIMIT = 5  # console.failed_login_limit's default


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = _make_stack(tmp_path_factory.mktemp("sessions"), "epns", {})
    yield made
    made.server.stop()
    made.broker.stop()


def _set_password(stack: Stack, password: str = PASSWORD) -> str:
    return stack.server.cli("admin", "password", USER, env={"EPNS_ADMIN_PASSWORD": password})


def _client(stack: Stack, source: str = "127.0.0.1", agent: str = "test") -> httpx.Client:
    """A browser-like client (it keeps cookies) whose requests come from ``source``."""
    context = ssl.create_default_context(cafile=str(stack.server.ca))
    transport = httpx.HTTPTransport(verify=context, local_address=source)
    return httpx.Client(base_url=stack.server.url, transport=transport, timeout=30,
                        headers={"User-Agent": agent})


def _login(client: httpx.Client, password: str = PASSWORD, user: str = USER) -> httpx.Response:
    """The login form, as a browser sends it (its double-submit token included)."""
    client.get("/console/login")
    token = client.cookies.get("epns_login")
    assert token
    return client.post("/console/login", data={"username": user, "password": password,
                                               "csrf": token, "next": "/console/agents"})


def _logged_in(client: httpx.Client) -> tuple[str, str]:
    """Log in; the session cookie and the page's CSRF token."""
    answer = _login(client)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/agents"
    cookie = answer.cookies["epns_session"]
    set_cookie = next(v for v in answer.headers.get_list("set-cookie")
                      if v.startswith("epns_session="))
    for attribute in ("Secure", "HttpOnly", "SameSite=strict"):
        assert attribute.lower() in set_cookie.lower(), set_cookie
    page = client.get("/console/agents")
    assert page.status_code == 200
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return cookie, found.group(1)


def _refused(stack: Stack, cookie: str, csrf: str) -> None:
    """A replayed session cookie is worth nothing: not to read, not to mint a token."""
    with _client(stack) as replay:
        headers = {"Cookie": f"epns_session={cookie}", "X-CSRF-Token": csrf}
        listed = replay.get("/api/v1/agents", headers=headers)
        assert listed.status_code == 401, listed.text
        minted = replay.post("/api/v1/tokens", json={"name": "stolen"}, headers=headers)
        assert minted.status_code == 401, minted.text
        page = replay.get("/console/agents", headers=headers)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login")


def _works(stack: Stack, cookie: str, csrf: str) -> None:
    with _client(stack) as other:
        headers = {"Cookie": f"epns_session={cookie}", "X-CSRF-Token": csrf}
        assert other.get("/api/v1/agents", headers=headers).status_code == 200


def test_a_cookie_replayed_after_logout_is_refused(stack: Stack) -> None:
    _set_password(stack)
    with _client(stack) as browser:
        cookie, csrf = _logged_in(browser)
        # The cookie is an opaque secret: no user name or token inside.
        assert USER not in cookie
        assert csrf not in cookie
        _works(stack, cookie, csrf)
        minted = browser.post("/api/v1/tokens", json={"name": "from-console"},
                              headers={"X-CSRF-Token": csrf})
        assert minted.status_code == 201, minted.text
        bye = browser.post("/console/logout", data={"csrf": csrf})
        assert bye.status_code == 303
        assert bye.headers["location"] == "/console/login?bye=1"
    _refused(stack, cookie, csrf)


def test_a_password_change_ends_every_session_of_the_user(stack: Stack) -> None:
    _set_password(stack)
    with _client(stack) as first, _client(stack) as second:
        one, one_csrf = _logged_in(first)
        two, two_csrf = _logged_in(second)
        _set_password(stack, "another password for the CLI")
        _refused(stack, one, one_csrf)
        _refused(stack, two, two_csrf)

    # The console's way: the user changes it, with the current one.
    _set_password(stack)
    with _client(stack) as first, _client(stack) as second:
        one, one_csrf = _logged_in(first)
        two, two_csrf = _logged_in(second)
        wrong = first.post("/api/v1/account/password", headers={"X-CSRF-Token": one_csrf},
                           json={"current_password": "not it", "new_password": "x" * 20})
        assert wrong.status_code == 400
        assert wrong.json()["error"]["code"] == "wrong_password"
        short = first.post("/api/v1/account/password", headers={"X-CSRF-Token": one_csrf},
                           json={"current_password": PASSWORD, "new_password": "short"})
        assert short.status_code == 422
        changed = first.post("/api/v1/account/password", headers={"X-CSRF-Token": one_csrf},
                             json={"current_password": PASSWORD,
                                   "new_password": "a brand new passphrase"})
        assert changed.status_code == 204, changed.text
        fresh = changed.cookies["epns_session"]
        assert fresh != one
        _refused(stack, one, one_csrf)
        _refused(stack, two, two_csrf)
        # The browser that changed it goes on, with its new session.
        assert first.get("/api/v1/sessions").status_code == 200
    with _client(stack) as third:
        assert _login(third).status_code == 401
        assert _login(third, "a brand new passphrase").status_code == 303
    with stack.api() as api:
        refused = api.post("/api/v1/account/password", json={
            "current_password": PASSWORD, "new_password": "x" * 20})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "not_a_user"
        audit = api.get("/api/v1/audit", params={"action": "password_change"}).json()
        assert any(entry["actor"] == f"user:{USER}" for entry in audit)


def test_an_admin_lists_and_revokes_another_session(stack: Stack) -> None:
    _set_password(stack)
    with _client(stack, agent="admin-browser") as admin, \
            _client(stack, "127.0.0.5", agent="other-browser/1.0") as other:
        _, csrf = _logged_in(admin)
        victim, victim_csrf = _logged_in(other)
        sessions = admin.get("/api/v1/sessions").json()
        mine = [s for s in sessions if s["current"]]
        assert [s["user_agent"] for s in mine] == ["admin-browser"]
        target = next(s for s in sessions if s["user_agent"] == "other-browser/1.0")
        assert target["source"] == "127.0.0.5"
        assert target["username"] == USER
        assert target["expires_at"] > target["last_seen"]
        assert set(target) == {"id", "username", "created_at", "last_seen", "source",
                               "user_agent", "expires_at", "current"}
        # Listing is open to API tokens too; revoking from a session needs its CSRF token.
        with stack.api() as api:
            assert any(s["id"] == target["id"] for s in api.get("/api/v1/sessions").json())
        assert admin.delete(f"/api/v1/sessions/{target['id']}").status_code == 403
        ended = admin.delete(f"/api/v1/sessions/{target['id']}", headers={"X-CSRF-Token": csrf})
        assert ended.status_code == 204, ended.text
        _refused(stack, victim, victim_csrf)
        again = admin.delete(f"/api/v1/sessions/{target['id']}", headers={"X-CSRF-Token": csrf})
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "unknown_session"
        assert admin.get("/api/v1/agents").status_code == 200
    with stack.api() as api:
        audit = api.get("/api/v1/audit", params={"action": "session_revoke"}).json()
    assert any(entry["ref"] == target["id"] and entry["actor"] == f"user:{USER}"
               for entry in audit)


def test_an_attackers_failures_do_not_lock_the_owner_out(stack: Stack) -> None:
    _set_password(stack)
    # The admin's own browser logged in before (it holds the device cookie).
    with _client(stack, "127.0.0.2") as owner:
        _logged_in(owner)
        device = owner.cookies.get("epns_device")
        assert device
    with _client(stack, "127.0.0.2") as attacker:
        answers = [_login(attacker, f"guess-{n}").status_code for n in range(20)]
    assert answers[:LIMIT] == [401] * LIMIT
    assert set(answers[LIMIT:]) == {429}
    # From another address the admin logs in at once.
    with _client(stack, "127.0.0.3") as elsewhere:
        assert _login(elsewhere).status_code == 303
    # From the attacker's address, the admin's browser (its device cookie) too.
    with _client(stack, "127.0.0.2") as owner:
        owner.cookies.set("epns_device", device)
        assert _login(owner).status_code == 303
    # A stranger's browser at that address waits, even with the right password:
    # to the server it is the attacker, and letting the right password through
    # there would tell the attacker when a guess was right.
    with _client(stack, "127.0.0.2") as stranger:
        refused = _login(stranger)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        # Another account from that address is not refused by the admin's count.
        assert _login(stranger, "wrong", user="somebody").status_code == 401
    # A device cookie made for another account, or forged, is no device cookie.
    with _client(stack, "127.0.0.2") as forger:
        forger.cookies.set("epns_device", device.split(".")[0] + ".0000")
        assert _login(forger).status_code == 429


def test_spraying_accounts_from_one_address_is_refused_there_only(stack: Stack) -> None:
    _set_password(stack)
    source_limit = 30  # console.failed_login_source_limit's default
    with _client(stack, "127.0.0.4") as sprayer:
        answers = [_login(sprayer, "guess", user=f"user{n}").status_code
                   for n in range(source_limit + 1)]
        assert answers[:source_limit] == [401] * source_limit
        assert answers[source_limit] == 429
        assert _login(sprayer).status_code == 429
    with _client(stack, "127.0.0.6") as clean:
        assert _login(clean).status_code == 303


def test_the_account_page_changes_the_password_and_ends_sessions(
        stack: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    tab = console(stack)  # sets the test password
    with _client(stack, "127.0.0.7", agent="second-browser/2.0") as other:
        victim, victim_csrf = _logged_in(other)
    tab.login()
    page = tab.page
    page.get_by_role("link", name=USER).click()
    page.wait_for_url(re.compile(r"/console/account$"))
    row = page.locator("#sessions tr", has_text="second-browser/2.0")
    expect(row).to_have_count(1)
    expect(page.locator("#sessions tr", has_text="this browser")).to_have_count(1)
    row.get_by_role("button", name="End session").click()
    expect(page.locator("#feedback")).to_contain_text("has ended")
    expect(page.locator("#sessions tr", has_text="second-browser/2.0")).to_have_count(0)
    _refused(stack, victim, victim_csrf)

    page.fill("#current-password", "not the password")
    page.fill("#new-password", "the console's new passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#form-password .form-error")).to_contain_text(
        "the current password is wrong")
    old = tab.session_cookie()
    page.fill("#current-password", PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(re.compile(r"/console/account\?changed=1$"))
    expect(page.locator("#feedback")).to_contain_text("Your password has changed")
    assert tab.session_cookie() != old
    _refused(stack, old, "")
    expect(page.locator("#sessions tr", has_text="this browser")).to_have_count(1)
    assert tab.errors == []


def test_a_revoked_sessions_live_stream_ends(stack: Stack) -> None:
    """The live stream is one long request: it ends soon after its session
    does, instead of telling a revoked browser about the fleet until it closes."""
    _set_password(stack)
    stack.create_agent("streamed")
    with _client(stack, agent="admin-browser") as admin, \
            _client(stack, "127.0.0.8", agent="watcher/1.0") as watcher:
        _, csrf = _logged_in(admin)
        _logged_in(watcher)
        target = next(s for s in admin.get("/api/v1/sessions").json()
                      if s["user_agent"] == "watcher/1.0")
        with watcher.stream("GET", "/console/events") as events:
            assert events.status_code == 200
            lines = events.iter_lines()
            assert next(lines).startswith("retry:")
            ended = admin.delete(f"/api/v1/sessions/{target['id']}",
                                 headers={"X-CSRF-Token": csrf})
            assert ended.status_code == 204
            seen: list[str] = []
            deadline = time.monotonic() + 40
            with stack.api() as api:
                while time.monotonic() < deadline:
                    # Each change is a notice on the stream: it checks its session.
                    api.put("/api/v1/agents/streamed/groups",
                            json={"groups": [f"g{len(seen) % 2}"]})
                    line = next(lines, None)
                    if line is None:
                        break
                    seen.append(line)
            assert "event: ended" in seen, seen
            assert next(lines, None) is None
