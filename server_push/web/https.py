"""The HTTPS listener: uvicorn with the fleet's TLS context, client
certificates requested but optional (agents may prove themselves with one).

uvicorn 0.54 does not expose the TLS session to the application, so a client
certificate cannot reach the sync endpoints (upstream: Kludex/uvicorn#400,
#745; the ASGI TLS extension is still unimplemented there). ``_TLSProtocol``
adds ``scope["extensions"]["tls"]["client_cert_chain"]`` as the ASGI TLS
extension specifies, from the connection's verified peer certificate.
``tests/server/test_https.py`` fails without it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from epns import tls
from epns.errors import EPNSError
from epns.server_config import HttpSettings
from epns.tls_reload import TlsReload

ASGIApp = Callable[..., Any]


def _peer_pem(transport: asyncio.BaseTransport) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return None if der is None else ssl.DER_cert_to_PEM_cert(der)


class _TLSProtocol(H11Protocol):
    """h11 with the peer certificate in the scope (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        pem = _peer_pem(transport)
        if pem is not None:
            self.app = with_client_cert(self.app, pem)


def with_client_cert(app: ASGIApp, pem: str) -> ASGIApp:
    """``app`` with ``pem`` as every request's verified client certificate."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {"client_cert_chain": [pem]}
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return wrapped


def client_cert_pem(scope: Mapping[str, Any]) -> str | None:
    """The verified client certificate of a request, PEM, or None."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    return chain[0] if chain else None


def dual_stack_socket(settings: HttpSettings) -> socket.socket | None:
    """For ``host = "::"``, a socket on every IPv6 and IPv4 address (asyncio
    would make it IPv6 only); None for any other host, which uvicorn binds.
    Raises ``EPNSError`` when the port is taken."""
    if settings.host != "::":
        return None
    try:
        return socket.create_server(("::", settings.port), family=socket.AF_INET6,
                                    dualstack_ipv6=True, backlog=2048)
    except OSError as exc:
        raise EPNSError(f"the HTTPS listener on [::]:{settings.port} did not start: "
                        f"{exc.strerror or exc}") from exc


# Seconds between looks at the TLS files, taken at a handshake.
RELOAD_INTERVAL = 2.0


def make_server(app: ASGIApp, settings: HttpSettings) -> uvicorn.Server:
    """A uvicorn server for ``app`` on the configured address, with our TLS."""
    context = tls.server_context(settings.cert, settings.key, settings.client_ca)
    # A CA rotation rewrites these files: new handshakes follow them.
    reload = TlsReload(tuple(path for path in (settings.cert, settings.key, settings.client_ca)
                             if path is not None), lazy=RELOAD_INTERVAL)
    reload.attach(context, lambda: tls.server_context(settings.cert, settings.key,
                                                      settings.client_ca))
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, http=_TLSProtocol, lifespan="off",
        ssl_certfile=str(settings.cert), ssl_keyfile=str(settings.key),
        ssl_context_factory=lambda _config, _default: context,
        log_config=None, access_log=False, server_header=False,
        timeout_graceful_shutdown=5, limit_concurrency=2000)
    return uvicorn.Server(config)
