"""Open one route's socket: TCP (direct or through an HTTP CONNECT tunnel), then TLS.

Every step has its own timeout, and every failure is translated here, at the
boundary, into a ``RouteError`` whose message says what a support person
should look at. The result is a connected, handshaken TLS socket that is
handed to paho (see ``agent_push.mqtt``).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from typing import TYPE_CHECKING

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
    where = f"{host}:{port}"
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError as exc:
        raise TcpRefused(f"TCP {where} refused: nothing listens there, or a firewall "
                         "rejects the port") from exc
    except TimeoutError as exc:
        raise TcpTimeout(f"TCP {where} timed out after {timeout:g} s: a firewall drops "
                         "the packets silently") from exc
    except socket.gaierror as exc:
        raise TcpUnreachable(f"cannot resolve {host}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno in _UNREACHABLE:
            raise TcpUnreachable(f"TCP {where}: {exc.strerror} (no route)") from exc
        raise TcpUnreachable(f"TCP {where}: {exc.strerror or exc}") from exc


def _tunnel(proxy: ProxyEndpoint, host: str, port: int, timeout: float) -> socket.socket:
    # Proxy routes only: not in the idle memory of an agent that connects directly.
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError  # noqa: PLC0415
    from python_socks.sync import Proxy  # noqa: PLC0415

    where = f"proxy {proxy.host}:{proxy.port}"
    try:
        sock = Proxy.from_url(proxy.url(), rdns=True).connect(host, port, timeout=timeout)
    except ProxyTimeoutError as exc:
        raise ProxyFailed(f"{where} did not open a tunnel to {host}:{port} within "
                          f"{timeout:g} s: the proxy is silent (dead, or black-holed)") from exc
    except ProxyConnectionError as exc:
        # python-socks words a timeout as "[Errno None] Could not connect ... [None]".
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) else (
            f"no answer within {timeout:g} s")
        raise ProxyFailed(f"{where} cannot be reached: {reason.lower()}") from exc
    except ProxyError as exc:
        raise _proxy_refusal(where, host, port, exc) from exc
    except OSError as exc:
        raise ProxyFailed(f"{where}: {exc}") from exc
    sock.settimeout(None)
    return sock


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
    except ssl.SSLCertVerificationError as exc:
        raise TlsFailed(f"TLS to {host}: the broker's certificate did not verify "
                        f"({exc.verify_message}); a TLS-inspecting firewall replaces it") from exc
    except TimeoutError as exc:
        raise TlsFailed(f"TLS to {host}: no handshake within {timeout:g} s; something "
                        "accepts TCP but does not answer TLS") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsFailed(f"TLS to {host} failed: {exc}") from exc
    sock.settimeout(None)
    return sock
