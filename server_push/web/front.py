"""The front socket: HTTPS that a trusted TLS front ended, handed over in plain HTTP.

Two fronts use it. The broker's one-port listener (443 for MQTT and HTTPS
alike) writes the handover line of ``epns.front`` first; nginx, which cannot,
sends the client certificate and address in headers instead
(``X-Client-Cert: $ssl_client_escaped_cert``, ``X-Real-IP: $remote_addr``;
docs/deploy-nginx.md). Either way the request reaches the app as if the
server's own TLS had taken it: scheme ``https``, the client's address, and
the verified certificate in the ASGI TLS extension (``server_push.web.https``).

Trust comes from the socket's file mode: 0660, in the server's state
directory, so only the server's user and group (the embedded broker, or
nginx added to the group) can connect. Headers are believed only where no
handover line came: a client behind the broker's front cannot smuggle a
certificate in a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.responses import PlainTextResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from epns.errors import MalformedMessage
from epns.front import ADDRESS_HEADER, CERT_HEADER, from_headers, is_handover, read_handover
from epns.logs import event
from epns.unix_socket import bind_trusted_socket
from server_push.web.https import ASGIApp, with_client_cert

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660


class _FrontProtocol(H11Protocol):
    """h11 behind a front: reads the handover line, if any, before HTTP."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.scheme = "https"
        self._start: bytearray | None = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._start is None:
            super().data_received(data)
            return
        self._start += data
        try:
            rest = self._take_handover(bytes(self._start))
        except MalformedMessage as exc:
            event(log, "front_refused", logging.WARNING, reason=str(exc))
            self.transport.close()
            return
        if rest is not None:
            self._start = None
            if rest:
                super().data_received(rest)

    def _take_handover(self, start: bytes) -> bytes | None:
        """The bytes after the handover (all of them for nginx), or None
        while the line is incomplete."""
        carries = is_handover(start)
        if carries is None:
            return None
        if not carries:
            self.app = _with_front_headers(self.app)
            return start
        found = read_handover(start)
        if found is None:
            return None
        handover, length = found
        self.client = (handover.peer_host, handover.peer_port)
        if handover.cert_der is not None:
            self.app = with_client_cert(self.app, ssl.DER_cert_to_PEM_cert(handover.cert_der))
        return start[length:]


def _with_front_headers(app: ASGIApp) -> ASGIApp:
    """nginx's way: the certificate and the address in headers it sets."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                scope = _apply_headers(scope)
            except MalformedMessage as exc:
                await PlainTextResponse(str(exc), status_code=400)(scope, receive, send)
                return
        await app(scope, receive, send)

    return wrapped


def _apply_headers(scope: dict[str, Any]) -> dict[str, Any]:
    headers = {name.decode("latin-1"): value.decode("latin-1")
               for name, value in scope.get("headers") or []}
    handover = from_headers(headers.get(ADDRESS_HEADER), headers.get(CERT_HEADER))
    changes: dict[str, Any] = {"client": (handover.peer_host, handover.peer_port)}
    if handover.cert_der is not None:
        extensions = dict(scope.get("extensions") or {})
        pem = ssl.DER_cert_to_PEM_cert(handover.cert_der)
        extensions["tls"] = {"client_cert_chain": [pem]}
        changes["extensions"] = extensions
    return {**scope, **changes}


class _FrontServer(uvicorn.Server):
    """The HTTPS server beside it owns SIGINT and SIGTERM; this one is stopped
    through ``should_exit`` by the same code that stops that one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class FrontListener:
    """The front socket served beside the HTTPS port, with the same app."""

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self._path = path
        self._socket = bind_trusted_socket(path, "the front socket")
        config = uvicorn.Config(
            app, http=_FrontProtocol, lifespan="off", log_config=None, access_log=False,
            server_header=False, timeout_graceful_shutdown=5, limit_concurrency=2000)
        self._server = _FrontServer(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Serve in the background."""
        self._task = asyncio.create_task(self._server.serve([self._socket]))
        event(log, "front_socket", path=str(self._path))

    async def stop(self) -> None:
        """Stop serving, let open requests finish, remove the socket file."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
