"""Open one route's connection: TCP (direct or through an HTTP CONNECT tunnel), then TLS.

Every step has its own timeout, and every failure is translated here, at the
boundary, into a ``RouteError`` whose message says what a support person
should look at. ``open_route`` returns a connected, handshaken TLS socket that
is handed to paho (see ``agent_push.mqtt``); ``open_stream`` takes the same
steps on the event loop for the sync's HTTPS (``agent_push.http_exchange``),
so that push and sync fail in the same words and the agent's one route
decision (``epns.routes.fault_of``) reads both alike.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from typing import TYPE_CHECKING

from agent_push import happy_eyeballs
from epns.agent_config import TimeoutSettings
from epns.errors import (
    ProxyAuthFailed,
    ProxyFailed,
    ProxyPortRefused,
    RouteError,
    TcpRefused,
    TcpTimeout,
    TcpUnreachable,
    TlsFailed,
)
from epns.eyeballs import ATTEMPT_DELAY
from epns.routes import ProxyEndpoint, Route

if TYPE_CHECKING:
    from python_socks import ProxyError

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def open_route(route: Route, context: ssl.SSLContext, timeouts: TimeoutSettings) -> ssl.SSLSocket:
    """A TLS socket to the broker over ``route``; raises a ``RouteError``."""
    if route.proxy is None:
        raw = _tcp(route.host, route.port, timeouts.tcp_connect)
    else:
        raw = _tunnel(route.proxy, route.host, route.port, timeouts.proxy_connect)
    try:
        return _tls(raw, context, route.host, timeouts.tls_handshake)
    except RouteError:
        raw.close()
        raise


def _tcp(host: str, port: int, timeout: float) -> socket.socket:
    try:
        # Both families raced (RFC 8305): a broken IPv6 path costs 250 ms.
        return happy_eyeballs.connect(host, port, timeout)
    except OSError as exc:
        raise tcp_failure(exc, host, port, timeout) from exc


def tcp_failure(exc: OSError, host: str, port: int, timeout: float) -> RouteError:
    """The words for a TCP connection to ``host:port`` that failed with ``exc``."""
    where = f"{host}:{port}"
    if isinstance(exc, ConnectionRefusedError):
        return TcpRefused(f"TCP {where} refused: nothing listens there, or a firewall "
                          "rejects the port")
    if isinstance(exc, TimeoutError):
        return TcpTimeout(f"TCP {where} timed out after {timeout:g} s: a firewall drops "
                          "the packets silently")
    if isinstance(exc, socket.gaierror):
        return TcpUnreachable(f"cannot resolve {host}: {exc.strerror}")
    if exc.errno in _UNREACHABLE:
        return TcpUnreachable(f"TCP {where}: {exc.strerror} (no route)")
    return TcpUnreachable(f"TCP {where}: {exc.strerror or exc}")


def _tunnel(proxy: ProxyEndpoint, host: str, port: int, timeout: float) -> socket.socket:
    # Proxy routes only: not in the idle memory of an agent that connects directly.
    from python_socks import ProxyError  # noqa: PLC0415
    from python_socks.sync import Proxy  # noqa: PLC0415

    try:
        sock = Proxy.from_url(proxy.url(), rdns=True).connect(host, port, timeout=timeout)
    except (ProxyError, OSError) as exc:
        raise tunnel_failure(exc, proxy, host, port, timeout) from exc
    sock.settimeout(None)
    return sock


def tunnel_failure(exc: ProxyError | OSError, proxy: ProxyEndpoint, host: str, port: int,
                   timeout: float) -> ProxyFailed:
    """The words for a CONNECT tunnel through ``proxy`` that failed with ``exc``."""
    from python_socks import (  # noqa: PLC0415 (proxy routes only, as _tunnel)
        ProxyConnectionError,
        ProxyError,
        ProxyTimeoutError,
    )

    where = f"proxy {proxy.host}:{proxy.port}"
    if isinstance(exc, ProxyTimeoutError):
        return ProxyFailed(f"{where} did not open a tunnel to {host}:{port} within "
                           f"{timeout:g} s: the proxy is silent (dead, or black-holed)")
    if isinstance(exc, ProxyConnectionError):
        # python-socks words a timeout as "[Errno None] Could not connect ... [None]".
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) else (
            f"no answer within {timeout:g} s")
        return ProxyFailed(f"{where} cannot be reached: {reason.lower()}")
    if isinstance(exc, ProxyError):
        return _proxy_refusal(where, host, port, exc)
    return ProxyFailed(f"{where}: {exc}")


def _proxy_refusal(where: str, host: str, port: int, exc: ProxyError) -> ProxyFailed:
    code = exc.error_code
    if code in (401, 407):
        # tinyproxy answers a bad password with 401, most proxies with 407.
        return ProxyAuthFailed(f"{where}: proxy authentication failed ({code}); check "
                               "the proxy username and password")
    if code == 403:
        return ProxyPortRefused(f"{where} forbids CONNECT to {host}:{port} (403): the "
                                "agent tries the proxy's next port; to use this one, allow "
                                "it in the proxy's ACL (Squid SSL_ports, tinyproxy ConnectPort)")
    return ProxyFailed(f"{where} refused CONNECT to {host}:{port}: {exc}")


def _tls(raw: socket.socket, context: ssl.SSLContext, host: str,
         timeout: float) -> ssl.SSLSocket:
    raw.settimeout(timeout)
    try:
        sock = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
        sock.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        raise tls_failure(exc, host, timeout, peer="broker") from exc
    sock.settimeout(None)
    return sock


def tls_failure(exc: OSError, host: str, timeout: float, *, peer: str) -> TlsFailed:
    """The words for a TLS handshake with ``host`` (the ``peer``: broker or
    server) that failed with ``exc``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(f"TLS to {host}: the {peer}'s certificate did not verify "
                         f"({exc.verify_message}): the fleet CA was rotated while this agent "
                         "was offline past the overlap (the way back: epns-agent trust reset "
                         "--ca with the server's current ca.crt, and for a certificate agent "
                         "enrol it again; docs/rotation.md), or a TLS-inspecting firewall "
                         "replaces it")
    if isinstance(exc, TimeoutError):
        return TlsFailed(f"TLS to {host}: no handshake within {timeout:g} s; something "
                         "accepts TCP but does not answer TLS")
    return TlsFailed(f"TLS to {host} failed: {exc}")


# --- the same steps on the event loop ---------------------------------------------


async def open_stream(host: str, port: int, *, proxy: ProxyEndpoint | None,
                      context: ssl.SSLContext | None, timeouts: TimeoutSettings,
                      peer: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams to ``host:port``, directly or through ``proxy``, in TLS unless
    ``context`` is None; each step within its timeout, as ``open_route``'s.
    Raises a ``RouteError``; cancelled, it leaves no socket open."""
    if proxy is None:
        reader, writer = await _tcp_async(host, port, timeouts.tcp_connect)
    else:
        reader, writer = await _tunnel_async(proxy, host, port, timeouts.proxy_connect)
    if context is None:
        return reader, writer
    timeout = timeouts.tls_handshake
    try:
        async with asyncio.timeout(timeout):
            # asyncio's own handshake limit is only a backstop: ours fires
            # first, as a TimeoutError, and is worded as open_route's is.
            await writer.start_tls(context, server_hostname=host,
                                   ssl_handshake_timeout=2 * timeout)
    except (ssl.SSLError, OSError) as exc:
        writer.transport.abort()
        raise tls_failure(exc, host, timeout, peer=peer) from exc
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def _tcp_async(host: str, port: int, timeout: float
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(timeout):
            # Happy Eyeballs (RFC 8305), as the blocking dial does: a broken
            # IPv6 path costs a quarter of a second, not the whole timeout.
            return await asyncio.open_connection(host, port, happy_eyeballs_delay=ATTEMPT_DELAY,
                                                 interleave=1)
    except OSError as exc:
        raise tcp_failure(exc, host, port, timeout) from exc


async def _tunnel_async(proxy: ProxyEndpoint, host: str, port: int, timeout: float
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    from python_socks import ProxyError  # noqa: PLC0415 (as _tunnel)
    from python_socks.async_.asyncio import Proxy  # noqa: PLC0415

    try:
        sock = await Proxy.from_url(proxy.url(), rdns=True).connect(host, port, timeout=timeout)
    except (ProxyError, OSError) as exc:
        raise tunnel_failure(exc, proxy, host, port, timeout) from exc
    try:
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
