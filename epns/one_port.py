"""What a connection on the one-port listener speaks, sans-IO.

After the TLS handshake: ALPN ``mqtt`` is MQTT; with no ALPN, MQTT's first
byte (CONNECT, 0x10) is too. Everything else is HTTP, and an HTTP request
line ``GET <websocket path>`` is MQTT over WebSocket, once its head is whole.
"""

from __future__ import annotations

import ssl
from enum import Enum
from urllib.parse import quote

from epns.front import ADDRESS_HEADER, CERT_HEADER, Handover

__all__ = ["ALPN", "MAX_HEAD", "Kind", "classify", "websocket_head"]

ALPN = ("mqtt", "http/1.1")
MQTT_CONNECT = 0x10
# A WebSocket upgrade's head is a few hundred bytes; past this, the server
# gets the bytes as HTTP and answers them.
MAX_HEAD = 16 * 1024


class Kind(Enum):
    """What a one-port connection speaks."""

    MQTT = "mqtt"
    HTTP = "http"
    WEBSOCKET = "websocket"


def classify(alpn: str | None, start: bytes, websocket_path: str | None) -> Kind | None:
    """The kind of a connection that offered ``alpn`` and sent ``start`` so
    far; None while more bytes are needed to tell."""
    if alpn == "mqtt" or (alpn is None and start[:1] == bytes([MQTT_CONNECT])):
        return Kind.MQTT
    if not start and alpn is None:
        return None
    if websocket_path is None:
        return Kind.HTTP
    target = f"GET {websocket_path}".encode()
    line_end = start.find(b"\r\n")
    if line_end < 0:
        # Undecided while the start still reads as that request line.
        undecided = len(start) < MAX_HEAD and (target.startswith(start) or start.startswith(
            target))
        return None if undecided else Kind.HTTP
    line = start[:line_end]
    if not (line.startswith(target + b" ") or line.startswith(target + b"?")):
        return Kind.HTTP
    if b"\r\n\r\n" in start:
        return Kind.WEBSOCKET
    return None if len(start) < MAX_HEAD else Kind.HTTP


def websocket_head(start: bytes, handover: Handover) -> tuple[bytes, bytes]:
    """The upgrade request's head with the front's own ``X-Real-IP`` and
    ``X-Client-Cert`` (the client's copies removed), and the bytes after it."""
    head, _, rest = start.partition(b"\r\n\r\n")
    ours = {ADDRESS_HEADER.encode(), CERT_HEADER.encode()}
    lines = [line for line in head.split(b"\r\n")
             if line.split(b":", 1)[0].strip().lower() not in ours]
    lines.append(b"X-Real-IP: " + handover.peer_host.encode("ascii"))
    if handover.cert_der is not None:
        lines.append(b"X-Client-Cert: " + _escaped_pem(handover.cert_der))
    return b"\r\n".join(lines) + b"\r\n\r\n", rest


def _escaped_pem(der: bytes) -> bytes:
    """As nginx's ``$ssl_client_escaped_cert``: the PEM, URL-escaped."""
    return quote(ssl.DER_cert_to_PEM_cert(der), safe="").encode("ascii")
