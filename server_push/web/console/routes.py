"""The console's own endpoints: the page shells, the login and logout, and the
live event stream. Everything a page shows or changes goes through the REST
API from the page's script, so the console and the API stay one implementation.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import FormData
from starlette.templating import Jinja2Templates

from epns.errors import Forbidden, Unauthorized
from epns.sync_contract import KEEPALIVE_RANGE, MAX_SYNC_INTERVAL, MIN_SYNC_INTERVAL, ROUTE_KINDS
from server_push.security.console_sessions import MIN_PASSWORD, SessionStore
from server_push.security.users import Users
from server_push.web.api import NAME, get_services
from server_push.web.console import device_cookie, stream
from server_push.web.console.session_cookie import (
    COOKIE,
    LOGIN_COOKIE,
    LOGIN_COOKIE_AGE,
    clear_cookie,
    set_cookie,
)
from server_push.web.console.throttle import LoginThrottle, login_keys

router = APIRouter(include_in_schema=False)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/console/static"
HOME = "/console/agents"
LOGIN = "/console/login"
_templates = Jinja2Templates(env=Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=True))
# Only where the login may send the browser back to: no open redirect.
_NEXT = re.compile(r"/console/[A-Za-z0-9._/-]*|/api/docs")
# Pages load only their own scripts and styles; nothing inline, nothing remote,
# never framed (clickjacking on the wake buttons).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MAX_USERNAME = 128
# Seconds between checks that a live stream's session still holds.
SESSION_RECHECK = 5.0
# argon2 cost grows with the input; a login form has no use for more.
MAX_PASSWORD = 1024


def _user(request: Request) -> str | None:
    user = request.session.get("user")
    return user if isinstance(user, str) else None


def _throttle(request: Request) -> LoginThrottle:
    """The app's login throttle, made on first use."""
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        state.login_throttle = LoginThrottle(
            get_services(request).settings.console.failed_login_window)
    throttle: LoginThrottle = state.login_throttle
    return throttle


def _source(request: Request) -> str:
    return request.client.host if request.client else "?"


def _render(request: Request, template: str, context: dict[str, Any],
            status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _templates.TemplateResponse(request, template, context, status_code=status,
                                       headers={**_HEADERS, **(headers or {})})


def _page(request: Request, template: str, nav: str, **context: Any) -> Response:
    """A page for the logged-in admin, or the way to the login."""
    user = _user(request)
    if user is None:
        return RedirectResponse(f"{LOGIN}?next={request.url.path}", status_code=303)
    return _render(request, template, {"user": user, "csrf": request.session.get("csrf", ""),
                                       "nav": nav, **context})


def _safe_next(value: str) -> str:
    return value if _NEXT.fullmatch(value) and "//" not in value else HOME


def _login_form(request: Request, status: int = 200, *, error: str = "", username: str = "",
                next_url: str = HOME, headers: dict[str, str] | None = None) -> Response:
    # A pre-login token, double-submitted: the form echoes the SameSite=Strict
    # cookie, so a forged cross-site login (into the attacker's account)
    # cannot present it.
    token = request.cookies.get(LOGIN_COOKIE) or ""
    if not 32 <= len(token) <= 100:
        token = secrets.token_urlsafe(32)
    notice = "You are logged out." if request.query_params.get("bye") and not error else ""
    response = _render(request, "login.html", {
        "login_csrf": token, "error": error, "notice": notice, "username": username,
        "next": next_url}, status, headers)
    set_cookie(response, LOGIN_COOKIE, token, LOGIN_COOKIE_AGE)
    return response


def _field(form: FormData, name: str, limit: int) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


@router.get("/")
async def root() -> RedirectResponse:
    """The console's start page."""
    return RedirectResponse(HOME, status_code=303)


@router.get(LOGIN)
async def login_page(request: Request) -> Response:
    """The login form (or the agents page when already logged in)."""
    next_url = _safe_next(request.query_params.get("next", ""))
    if _user(request) is not None:
        return RedirectResponse(next_url, status_code=303)
    return _login_form(request, next_url=next_url)


@router.post(LOGIN)
async def login(request: Request) -> Response:
    """Check the password; on success start a new server-held session.

    The throttle (``throttle.py``) counts failures per address and user name
    together, and apart for a browser holding this user's device cookie, so
    nobody else's failures refuse the owner. A key at its limit is refused
    before the password is checked: the answer is the same whatever the
    password, and a guesser past the limit costs no argon2 work."""
    async with request.form() as form:
        username = _field(form, "username", MAX_USERNAME)
        password = _field(form, "password", MAX_PASSWORD)
        next_url = _safe_next(_field(form, "next", 200))
        token = _field(form, "csrf", 100)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(token, expected):
        return _login_form(request, 403, error="The login form had expired. It is fresh "
                           "now: log in again.", username=username, next_url=next_url)
    console = get_services(request).settings.console
    device_secret: str = request.app.state.session_secret
    keys = login_keys(_source(request), username,
                      device=device_cookie.device_of(device_secret, username,
                                                     request.cookies.get(device_cookie.COOKIE)),
                      limit=console.failed_login_limit,
                      source_limit=console.failed_login_source_limit)
    throttle = _throttle(request)
    wait = throttle.retry_after(keys, time.monotonic())
    if wait > 0:
        seconds = math.ceil(wait)
        return _login_form(request, 429, error=f"Too many failed logins. Wait {seconds} s, "
                           "then try again.", username=username, next_url=next_url,
                           headers={"Retry-After": str(seconds)})
    principal = await get_services(request).credentials.check_password(username, password)
    if principal is None:
        throttle.failed(keys, time.monotonic())
        return _login_form(request, 401, error="Wrong user name or password. Check both and "
                           "try again; 'epns-server admin password' sets a new one.",
                           username=username, next_url=next_url)
    throttle.succeeded(keys)
    users: Users = request.app.state.users
    if not await users.enabled(principal.name):
        return _login_form(request, 403, error="This user is disabled. Ask an admin to enable "
                           "it.", username=username, next_url=next_url)
    store: SessionStore = request.app.state.console_sessions
    old = request.session.get("session_id")
    if old:
        # A login from a logged-in browser replaces its session.
        await store.end(old)
    secret, _ = await store.start(principal.name, source=_source(request),
                                  user_agent=request.headers.get("user-agent", ""))
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(response, COOKIE, secret, int(store.lifetime))
    set_cookie(response, device_cookie.COOKIE, device_cookie.issue(device_secret, principal.name),
               device_cookie.MAX_AGE)
    clear_cookie(response, LOGIN_COOKIE)
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    """End the session: its row is deleted, so the cookie is worth nothing
    wherever a copy of it went."""
    async with request.form() as form:
        token = _field(form, "csrf", 100)
    expected = request.session.get("csrf")
    if _user(request) is not None and not (
            expected and secrets.compare_digest(token, str(expected))):
        raise Forbidden("missing or wrong CSRF token: reload the page and log out again",
                        code="csrf")
    session_id = request.session.get("session_id")
    if session_id:
        store: SessionStore = request.app.state.console_sessions
        await store.end(session_id)
    response = RedirectResponse(f"{LOGIN}?bye=1", status_code=303)
    clear_cookie(response, COOKIE)
    return response


@router.get("/console/events")
async def events(request: Request) -> StreamingResponse:
    """Live notices for the logged-in admin's pages (Server-Sent Events)."""
    if _user(request) is None:
        raise Unauthorized("log in to the console to get live updates", code="unauthorized")
    store: SessionStore = request.app.state.console_sessions
    chunks = _while_alive(stream.notices(get_services(request).bus), store,
                          str(request.session.get("session_id", "")))
    return StreamingResponse(chunks, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _while_alive(chunks: AsyncIterator[str], store: SessionStore,
                       session_id: str) -> AsyncIterator[str]:
    """The stream, ended when its session ends (logout elsewhere, a password
    change, an admin's revocation): the session is checked again with the
    first chunk after every SESSION_RECHECK seconds (a keep-alive comes every
    15 s), so an ended session stops getting notices within seconds."""
    checked = time.monotonic()
    async for chunk in chunks:
        if time.monotonic() - checked >= SESSION_RECHECK:
            checked = time.monotonic()
            if not await store.alive(session_id):
                yield "event: ended\ndata: {}\n\n"
                return
        yield chunk


@router.get(HOME)
async def agents_page(request: Request) -> Response:
    """The agents table."""
    return _page(request, "agents.html", "agents", route_kinds=ROUTE_KINDS,
                 expiring_soon=get_services(request).settings.identity.expiring_soon)


@router.get("/console/agents/{agent_id}")
async def agent_page(request: Request,
                     agent_id: Annotated[str, PathParam(pattern=NAME)]) -> Response:
    """One agent."""
    return _page(request, "agent.html", "agents", agent_id=agent_id,
                 expiring_soon=get_services(request).settings.identity.expiring_soon)


@router.get("/console/wakeups")
async def wakeups_page(request: Request) -> Response:
    """Wake-up history."""
    return _page(request, "wakeups.html", "wakeups")


@router.get("/console/wakeups/{wakeup_id}")
async def wakeup_page(request: Request,
                      wakeup_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,64}$")]
                      ) -> Response:
    """One wake-up with every target's state."""
    return _page(request, "wakeup.html", "wakeups", wakeup_id=wakeup_id)


@router.get("/console/wol")
async def wol_page(request: Request) -> Response:
    """Wake-on-LAN history."""
    return _page(request, "wol.html", "wol")


@router.get("/console/campaigns")
async def campaigns_page(request: Request) -> Response:
    """Wake campaigns: the list, the cap's pacing, the create/edit form."""
    return _page(request, "campaigns.html", "campaigns")


@router.get("/console/campaign-runs/{run_id}")
async def campaign_run_page(request: Request,
                            run_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,64}$")]
                            ) -> Response:
    """One campaign run's report."""
    return _page(request, "campaign_run.html", "campaigns", run_id=run_id)


@router.get("/console/enrolments")
async def enrolments_page(request: Request) -> Response:
    """Enrolments waiting for approval (Accept / Reject), and the latest decided."""
    return _page(request, "enrolments.html", "enrolments")


@router.get("/console/tokens")
async def tokens_page(request: Request) -> Response:
    """API tokens: create (the secret shown once), list, revoke."""
    return _page(request, "tokens.html", "tokens")


@router.get("/console/audit")
async def audit_page(request: Request) -> Response:
    """The audit log: filtered, paged, and its CSV export."""
    return _page(request, "audit.html", "audit")


@router.get("/console/account")
async def account_page(request: Request) -> Response:
    """The user's password, and the console sessions an admin may end."""
    console = get_services(request).settings.console
    return _page(request, "account.html", "account", min_password=MIN_PASSWORD,
                 idle_minutes=round(console.session_idle_timeout / 60),
                 max_hours=round(console.session_max_age / 3600, 1))


@router.get("/console/settings")
async def settings_page(request: Request) -> Response:
    """The run-time settings."""
    return _page(request, "settings.html", "settings", route_kinds=ROUTE_KINDS,
                 keepalive_range=KEEPALIVE_RANGE,
                 sync_range=(int(MIN_SYNC_INTERVAL), int(MAX_SYNC_INTERVAL)))
