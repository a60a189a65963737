"""Security headers on every answer, the API's and the console's alike.

- ``Strict-Transport-Security`` on HTTPS answers (``http.hsts_max_age``): a
  browser that saw it never speaks plain HTTP to this host again, so a
  network attacker cannot strip TLS from a later visit. Not
  ``includeSubDomains``: the server's name may share a domain with hosts it
  knows nothing of.
- ``X-Content-Type-Options: nosniff``: an answer is read only as its type.
- ``Referrer-Policy: same-origin``: no console address leaks to other sites.
- ``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` that allows
  nothing, where the route set none: a JSON answer is never a page to frame or
  run. The console's pages and the API docs set their own policy.
"""

from __future__ import annotations

from typing import Any

from server_push.web.https import ASGIApp

_DEFAULTS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)


class SecurityHeaders:
    """ASGI middleware adding the headers a route did not set itself."""

    def __init__(self, app: ASGIApp, hsts_max_age: int) -> None:
        self._app = app
        self._hsts = (f"max-age={hsts_max_age}".encode() if hsts_max_age > 0 else None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        extra = list(_DEFAULTS)
        if self._hsts is not None and scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", self._hsts))

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)
