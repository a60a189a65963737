"""A cap on request bodies, before any handler buffers them.

FastAPI reads a whole JSON body before it checks anything, the bearer token
included, so without a cap one request could make the server buffer any
amount. The sync endpoints keep their own limit (``sync.max_body``), which
they check while reading."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from epns.errors import PayloadTooLarge
from server_push.web.errors import error_body


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413: at once when Content-Length
    says so, else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_suffix: str = "/sync") -> None:
        self._app = app
        self._max = max_bytes
        self._exempt = exempt_suffix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self._exempt):
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max:
            await _refuse(send, self._max)
            return
        await self._app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max:
                # FastAPI turns other errors raised while it reads the body
                # into a 400; an HTTPException keeps its status (413).
                raise HTTPException(413, f"the body exceeds the limit of {self._max} bytes")
            return message

        return counted


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(error_body(413, "payload_too_large",
                                 f"the body exceeds the limit of {limit} bytes")).encode()
    headers: list[Any] = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The body of ``request``, or PayloadTooLarge as soon as it is known to be
    over ``limit`` bytes: from Content-Length, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the {what} is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the {what} exceeds the limit of {limit} bytes")
    return bytes(body)
