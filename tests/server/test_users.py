"""Console users (issue 18, item 1), against one real server for the module:
the API and the CLI add, list, disable, enable, reset and delete users, a
disabled or deleted user's sessions end and its logins are refused, and the
last enabled admin stays."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture
from tests.server.test_console_sessions import _client, _login, _refused
from tests.support.processes import ROOT

PASSWORD = "a user's own passphrase"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = _make_stack(tmp_path_factory.mktemp("users"), "epns", {})
    yield made
    made.server.stop()
    made.broker.stop()


def _cli(stack: Stack, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**stack.server.env, **({"EPNS_ADMIN_PASSWORD": password} if password else {})}
    return subprocess.run([sys.executable, "-m", "server_push", "user", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_an_admin_manages_users_through_the_api(stack: Stack) -> None:
    with stack.api() as api:
        made = api.post("/api/v1/users", json={"username": "alice"})
        assert made.status_code == 201, made.text
        generated = made.json()["password"]
        assert made.json()["role"] == "admin"
        assert made.json()["created_by"] == "token:tests"
        assert api.post("/api/v1/users", json={"username": "alice"}).status_code == 409
        weak = api.post("/api/v1/users", json={"username": "bob", "password": "short"})
        assert weak.status_code == 422
        bad = api.post("/api/v1/users", json={"username": "no spaces"})
        assert bad.status_code == 422
        listed = {u["username"]: u for u in api.get("/api/v1/users").json()}
        assert set(listed) >= {"admin", "alice"}
        assert "password_hash" not in listed["alice"]

    with _client(stack, "127.0.0.11") as browser:
        assert _login(browser, generated, user="alice").status_code == 303
        cookie = browser.cookies["epns_session"]
        page = browser.get("/console/agents").text
        csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        minted = browser.post("/api/v1/tokens", json={"name": "alices-script"},
                              headers={"X-CSRF-Token": csrf})
        assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
    with stack.server.client(token) as script:
        assert script.get("/api/v1/agents").status_code == 200
    with stack.api() as api:
        disabled = api.post("/api/v1/users/alice/disable")
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["disabled"] is True
    _refused(stack, cookie, "")
    # A token alice made goes with her.
    with stack.server.client(token) as script:
        assert script.get("/api/v1/agents").status_code == 401
    with _client(stack, "127.0.0.11") as browser:
        refused = _login(browser, generated, user="alice")
        assert refused.status_code == 403
        assert "This user is disabled" in refused.text
    with stack.api() as api:
        assert api.post("/api/v1/users/alice/enable").json()["disabled"] is False
        reset = api.post("/api/v1/users/alice/password", json={"password": PASSWORD})
        assert reset.status_code == 200, reset.text
        assert "password" not in reset.json()
    with _client(stack, "127.0.0.11") as browser:
        assert _login(browser, generated, user="alice").status_code == 401
        assert _login(browser, PASSWORD, user="alice").status_code == 303
        cookie = browser.cookies["epns_session"]
    with stack.api() as api:
        assert api.delete("/api/v1/users/alice").status_code == 204
        assert api.delete("/api/v1/users/alice").status_code == 404
        actions = {e["action"] for e in api.get("/api/v1/audit", params={
            "target": "alice"}).json()}
    assert actions >= {"user_add", "user_disable", "user_enable", "user_password_reset",
                       "user_delete"}
    _refused(stack, cookie, "")


def test_the_last_enabled_admin_stays(stack: Stack) -> None:
    with stack.api() as api:
        others = [u["username"] for u in api.get("/api/v1/users").json()
                  if u["username"] != "admin" and not u["disabled"]]
        for name in others:
            assert api.post(f"/api/v1/users/{name}/disable").status_code == 200
        for answer in (api.post("/api/v1/users/admin/disable"),
                       api.delete("/api/v1/users/admin")):
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "last_admin"


def test_the_cli_manages_users(stack: Stack) -> None:
    added = _cli(stack, "add", "carol", password=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert "console user 'carol' (admin)" in added.stdout
    listed = _cli(stack, "list", "--json")
    assert {u["username"]: u["disabled"] for u in json.loads(listed.stdout)}["carol"] is False
    with _client(stack, "127.0.0.12") as browser:
        _logged_in_as(browser, "carol", PASSWORD)
        cookie = browser.cookies["epns_session"]
    assert "disabled" in _cli(stack, "disable", "carol").stdout
    _refused(stack, cookie, "")
    assert "enabled" in _cli(stack, "enable", "carol").stdout
    passwd = _cli(stack, "passwd", "carol")
    assert passwd.returncode == 0, passwd.stderr
    new = passwd.stdout.rsplit("'", 2)[1]
    with _client(stack, "127.0.0.12") as browser:
        _logged_in_as(browser, "carol", new)
    table = _cli(stack, "list").stdout
    assert "carol" in table
    assert "enabled" in table
    assert "deleted" in _cli(stack, "delete", "carol").stdout
    missing = _cli(stack, "delete", "carol")
    assert missing.returncode == 2
    assert "no user 'carol'" in missing.stderr
    with stack.api() as api:
        audit = api.get("/api/v1/audit", params={"target": "carol", "actor": "cli"}).json()
    assert {e["action"] for e in audit} >= {"user_add", "user_disable", "user_delete"}


def _logged_in_as(browser: httpx.Client, user: str, password: str) -> None:
    answer = _login(browser, password, user=user)
    assert answer.status_code == 303, answer.text


def test_an_admin_manages_users_on_the_account_page(
        stack: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    tab = console(stack)
    tab.login()
    page = tab.page
    page.goto(f"{tab.url}/console/account")
    page.fill("#new-user", "dave")
    page.get_by_role("button", name="Add user").click()
    expect(page.locator("#user-secret")).to_be_visible()
    expect(page.locator("#user-secret-name")).to_have_text("dave")
    password = page.locator("#user-secret-value").inner_text()
    row = page.locator('tr[data-user="dave"]')
    expect(row).to_contain_text("enabled")
    with _client(stack, "127.0.0.13") as browser:
        _logged_in_as(browser, "dave", password)
        cookie = browser.cookies["epns_session"]
    page.get_by_role("button", name="Disable dave").click()
    page.locator("dialog.confirm-action").get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    _refused(stack, cookie, "")
    page.get_by_role("button", name="Enable dave").click()
    expect(row).to_contain_text("enabled")
    page.get_by_role("button", name="Delete dave").click()
    page.locator("dialog.confirm-action").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    # A refusal is shown as the API words it.
    page.get_by_role("button", name="Disable admin").click()
    page.locator("dialog.confirm-action").get_by_role("button", name="Disable").click()
    expect(page.locator("#feedback")).to_contain_text("is the last enabled admin")
    page.fill("#new-user", "no spaces")
    page.get_by_role("button", name="Add user").click()
    expect(page.locator("#form-user .form-error")).to_be_visible()
    assert tab.errors == []
