"""The front socket: HTTPS that a trusted TLS front ended, handed over in plain HTTP.

Two fronts use it. The broker's one-port listener (443 for MQTT and HTTPS
alike) writes the handover line of ``epns.front`` first; nginx, which cannot,
sends the client certificate and address in headers instead
(``X-Client-Cert: $ssl_client_escaped_cert``, ``X-Real-IP: $remote_addr``;
docs/deploy-nginx.md). Either way the request reaches the app as if the
server's own TLS had taken it: scheme ``https``, the client's address, and
the verified certificate in the ASGI TLS extension (``server_push.https``).

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
import os
import socket
import ssl
import stat
from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from epns.errors import ConfigError, MalformedMessage
from epns.front import is_handover, read_handover
from epns.logs import event
from server_push.https import ASGIApp, with_client_cert

log = logging.getLogger("server.front")

SOCKET_MODE = 0o660
CERT_HEADER = b"x-client-cert"
ADDRESS_HEADER = b"x-real-ip"


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
            scope = _apply_headers(scope)
        await app(scope, receive, send)

    return wrapped


def _apply_headers(scope: dict[str, Any]) -> dict[str, Any]:
    headers = dict(scope.get("headers") or [])
    changes: dict[str, Any] = {}
    address = headers.get(ADDRESS_HEADER, b"").decode("latin-1").strip()
    if address:
        changes["client"] = (address, 0)
    pem = unquote(headers.get(CERT_HEADER, b"").decode("latin-1")).strip()
    if pem:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = {"client_cert_chain": [pem + "\n"]}
        changes["extensions"] = extensions
    return {**scope, **changes} if changes else scope


class _FrontServer(uvicorn.Server):
    """The HTTPS server beside it owns SIGINT and SIGTERM; this one is stopped
    through ``should_exit`` by the same code that stops that one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_front_socket(path: Path) -> socket.socket:
    """The front's listening Unix socket at ``path``, mode 0660. A socket file
    left by a server that died is replaced; a live one or any other file is
    an error."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"the front socket {path} exists and is not a socket; move it")
        if _answers(path):
            raise ConfigError(f"another server serves the front socket {path}: give this "
                              "one its own state_dir")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # umask first: the socket is never connectable by others, not even
        # between bind and chmod.
        old = os.umask(0o117)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, SOCKET_MODE)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot open the front socket {path}: {exc.strerror or exc} "
                          "(a state_dir with a shorter or writable path, or http.front = "
                          "false to turn it off)") from exc
    return sock


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class FrontListener:
    """The front socket served beside the HTTPS port, with the same app."""

    def __init__(self, app: ASGIApp, path: Path) -> None:
        self._path = path
        self._socket = bind_front_socket(path)
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
