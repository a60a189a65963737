"""Safe defaults (issue 18, item 9), against one real server for the module:
the API docs come from the package and need a login, the OpenAPI document
too; every HTTPS answer carries HSTS and the other security headers; the
state directory and the database are the server user's only (tightened at
start for an older installation); the first admin password is in a 0600
file, never in the output."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture
from tests.server.test_console_sessions import _client, _logged_in, _set_password


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = _make_stack(tmp_path_factory.mktemp("defaults"), "epns", {})
    yield made
    made.server.stop()
    made.broker.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_admin_password_is_in_a_private_file_not_in_the_output(stack: Stack) -> None:
    secret_file = stack.work / "initial-admin-password"
    said = next(line for line in stack.server.lines if "Login " in line)
    assert f"user 'admin', password in {secret_file}" in said
    assert _mode(secret_file) == 0o600
    password = re.search(r"^password: (\S+)$", secret_file.read_text(), re.MULTILINE)
    assert password
    assert not any(password.group(1) in line for line in stack.server.lines)
    # It logs in, and a password change deletes the file, which would be wrong then.
    with _client(stack, "127.0.0.9") as browser:
        browser.get("/console/login")
        answer = browser.post("/console/login", data={
            "username": "admin", "password": password.group(1),
            "csrf": browser.cookies["epns_login"], "next": "/console/agents"})
        assert answer.status_code == 303
    _set_password(stack)
    assert not secret_file.exists()


def test_the_state_is_private_and_tightened_at_start(stack: Stack) -> None:
    database = stack.work / "server.db"
    # The front socket lives in the state directory: its group may enter, no more.
    assert _mode(stack.work) == 0o750
    assert _mode(database) == 0o600
    assert _mode(stack.work / "secrets.json") == 0o600
    stack.work.chmod(0o755)
    database.chmod(0o644)
    stack.restart_server()
    assert _mode(stack.work) == 0o750
    assert _mode(database) == 0o600
    stack.server.log_contains(r"state_files_tightened changed=.*server\.db 644->600")
    for name in ("server.db-wal", "server.db-shm"):
        if (stack.work / name).exists():
            assert _mode(stack.work / name) == 0o600


def test_security_headers_on_every_answer(stack: Stack) -> None:
    with stack.server.client() as anonymous:
        for path in ("/api/v1/health", "/api/v1/agents", "/console/login", "/nope"):
            answer = anonymous.get(path)
            assert answer.headers["strict-transport-security"] == "max-age=31536000", path
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "same-origin"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        # The console's pages keep their own policy (their scripts and styles).
        login = anonymous.get("/console/login")
        assert "script-src 'self'" in login.headers["content-security-policy"]


def test_the_api_docs_are_served_from_the_package_behind_a_login(stack: Stack) -> None:
    with stack.server.client() as anonymous:
        assert anonymous.get("/api/v1/openapi.json").status_code == 401
        page = anonymous.get("/api/docs")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/login?next=/api/docs"
        bundled = resources.files("fastapi_offline").joinpath("static", "swagger-ui-bundle.js")
        script = anonymous.get("/api/docs/static/swagger-ui-bundle.js")
        assert script.status_code == 200
        assert script.content == bundled.read_bytes()
        assert anonymous.get("/api/docs/static/other.js").status_code == 404
    with stack.api() as api:
        assert api.get("/api/v1/openapi.json").json()["info"]["title"]
    _set_password(stack)
    with _client(stack) as browser:
        _logged_in(browser)
        page = browser.get("/api/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources
        assert all(s.startswith("/") or s.startswith("data:") for s in sources), sources
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert browser.get("/api/v1/openapi.json").status_code == 200


def test_the_docs_page_works_in_a_browser_and_tries_calls_with_the_session(
        stack: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    tab = console(stack)
    page = tab.page
    page.goto(f"{tab.url}/api/docs")
    page.wait_for_url(re.compile(r"/console/login\?next=/api/docs$"))
    tab.submit_login("admin", "correct horse battery staple")
    page.wait_for_url(re.compile(r"/api/docs$"))
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("epns management server")
    operation = page.locator("#operations-tokens-create_token_api_v1_tokens_post")
    expect(operation).to_be_visible()
    # "Try it out" on a state-changing call rides on the session and its CSRF token.
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("textarea").fill('{"name": "from-the-docs"}')
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text("201")
    with stack.api() as api:
        assert any(t["name"] == "from-the-docs" for t in api.get("/api/v1/tokens").json())
    assert tab.errors == []
