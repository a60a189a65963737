"""TLS contexts for every part: TLS 1.2 minimum, AEAD ciphers only.

The fleet uses ECDSA P-256 keys: a P-256 handshake costs about a tenth of an
RSA-2048 one, which is what makes a reconnect storm of thousands of agents cheap.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from epns.errors import ConfigError

__all__ = ["MQTT_ALPN", "WEBSOCKET_ALPN", "client_context", "server_context"]

# What a client offers by ALPN; the one-port listener (443) reads it. MQTT
# over WebSocket starts as HTTP, and a web server in front (nginx) refuses a
# handshake that offers only a protocol it does not know.
MQTT_ALPN = ("mqtt",)
WEBSOCKET_ALPN = ("http/1.1",)

# TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load(action: str, path: Path | None, call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot {action}: {path} does not exist") from exc
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot {action} from {path}: {exc}") from exc


def server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A listener's context. With ``client_ca``, client certificates are
    requested and verified against it, but not required: token clients have
    none, and the broker's auth step refuses a client that proves nothing."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load("load the broker certificate", cert, lambda: context.load_cert_chain(cert, key))
    if client_ca is not None:
        _load("load the fleet CA", client_ca, lambda: context.load_verify_locations(client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    check_hostname: bool = True,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """A client's context, pinned to the fleet CA when ``ca`` is given;
    ``alpn`` is what it offers (``MQTT_ALPN`` tells the broker's one-port
    listener that MQTT follows)."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = check_hostname
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if ca is not None:
        _load("load the fleet CA", ca, lambda: context.load_verify_locations(ca))
    else:
        context.load_default_certs()
    if cert is not None:
        _load("load the client certificate", cert, lambda: context.load_cert_chain(cert, key))
    return context
