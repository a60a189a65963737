"""The console's cookies, and the middleware that turns the session cookie
into the request's session.

``epns_session`` carries only the random secret of a server-held session
(``security/console_sessions.py``): ``Secure`` (HTTPS only), ``HttpOnly``
(no script reads it) and ``SameSite=Strict`` (never sent on a cross-site
request, not even a top-level link: a forged request from another site
arrives logged out; the X-CSRF-Token check stands behind it). The middleware
looks the secret up on each request and gives the app
``request.session == {"user", "csrf", "session_id"}``, or ``{}``; writing to
that dict changes nothing, the login and logout routes set the cookie.

``epns_login`` is the login form's double-submit CSRF token: the form echoes
it, and a cross-site page can neither read it nor make the browser send it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import cookie_parser

from epns.logs import event
from server_push.security.console_sessions import SessionStore
from server_push.web.errors import error_body
from server_push.web.https import ASGIApp

log = logging.getLogger(__name__)

COOKIE = "epns_session"
LOGIN_COOKIE = "epns_login"
LOGIN_COOKIE_AGE = 3600
_MAX_SECRET = 128


def cookies_of(scope: dict[str, Any]) -> dict[str, str]:
    """The request's cookies, parsed as Starlette's Request parses them."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            found.update(cookie_parser(value.decode("latin-1")))
    return found


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    """Set one of the console's cookies, with the attributes of them all."""
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    """Make the browser forget one of the console's cookies."""
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


class ConsoleSessions:
    """ASGI middleware: ``scope["session"]`` from the session cookie."""

    def __init__(self, app: ASGIApp, store: SessionStore, skip_prefix: str) -> None:
        self._app = app
        self._store = store
        self._skip = skip_prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        session: dict[str, str] = {}
        secret = cookies_of(scope).get(COOKIE)
        if secret and len(secret) <= _MAX_SECRET and not scope["path"].startswith(self._skip):
            try:
                view = await self._store.resolve(secret)
            except SQLAlchemyError as exc:
                event(log, "session_lookup_failed", logging.ERROR, error=str(exc))
                await _unavailable(send)
                return
            if view is not None:
                session = {"user": view.username, "csrf": view.csrf, "session_id": view.id}
        scope["session"] = session
        await self._app(scope, receive, send)


async def _unavailable(send: Any) -> None:
    body = json.dumps(error_body(503, "database_unavailable", "the database is unavailable: "
                                 "retry in a moment")).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"retry-after", b"5"),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
