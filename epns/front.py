"""The handover line of a TLS front, sans-IO.

One port 443 carries MQTT and HTTPS: the broker's one-port listener ends the
TLS, keeps MQTT, and relays HTTP to the server over a Unix socket that only
trusted fronts can open. What the TLS told the front (who the peer is, which
certificate it proved) would be lost on the way, so the front writes one line
before the relayed bytes, as HAProxy's PROXY protocol does for addresses::

    EPNS-FRONT/1 <peer host> <peer port> <certificate>\\r\\n

``<certificate>`` is the client's verified certificate (DER, base64) or ``-``.
The server reads the line and takes its contents as its own TLS would have
given them. The line cannot be confused with HTTP: no method is called
``EPNS-FRONT/1``.

nginx cannot write such a line; it sends the same facts in headers it sets
itself (``X-Real-IP: $remote_addr``, ``X-Client-Cert:
$ssl_client_escaped_cert``), read by ``from_headers``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import ssl
from dataclasses import dataclass
from urllib.parse import unquote

from epns.errors import MalformedMessage

__all__ = [
    "ADDRESS_HEADER",
    "CERT_HEADER",
    "Handover",
    "from_headers",
    "is_handover",
    "read_handover",
]

PREFIX = b"EPNS-FRONT/1 "
# A certificate of a few KiB, base64: the line is never longer.
MAX_LINE = 16 * 1024
ADDRESS_HEADER = "x-real-ip"
UNKNOWN_PEER = "::"
CERT_HEADER = "x-client-cert"


@dataclass(frozen=True, slots=True)
class Handover:
    """What the front learnt from the client's TLS."""

    peer_host: str
    peer_port: int
    cert_der: bytes | None = None

    def encode(self) -> bytes:
        """The line, ``\\r\\n`` included."""
        cert = b"-" if self.cert_der is None else base64.b64encode(self.cert_der)
        return b"%s%s %d %s\r\n" % (PREFIX, self.peer_host.encode("ascii"), self.peer_port, cert)


def is_handover(start: bytes) -> bool | None:
    """Whether a connection that began with ``start`` carries a handover
    line; None while too few bytes have come to tell."""
    if len(start) < len(PREFIX):
        return None if PREFIX.startswith(start) else False
    return start.startswith(PREFIX)


def read_handover(buffer: bytes) -> tuple[Handover, int] | None:
    """The handover at the start of ``buffer`` and the length of its line, or
    None until the whole line has come. Raises ``MalformedMessage`` for a
    line that is not one."""
    end = buffer.find(b"\r\n", 0, MAX_LINE + 2)
    if end < 0:
        if len(buffer) > MAX_LINE:
            raise MalformedMessage(f"the front's handover line is longer than {MAX_LINE} bytes")
        return None
    parts = buffer[len(PREFIX):end].split(b" ")
    if not buffer.startswith(PREFIX) or len(parts) != 3:
        raise MalformedMessage("the front's handover line is not "
                               "'EPNS-FRONT/1 <host> <port> <certificate>'")
    return Handover(_host(parts[0]), _port(parts[1]), _cert(parts[2])), end + 2


def _host(raw: bytes) -> str:
    try:
        return str(ipaddress.ip_address(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage("the front's handover names no peer address") from exc


def _port(raw: bytes) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise MalformedMessage("the front's handover names no peer port")
    return int(raw)


def _cert(raw: bytes) -> bytes | None:
    if raw == b"-":
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage("the front's handover certificate is not base64") from exc


def from_headers(address: str | None, escaped_cert: str | None) -> Handover:
    """What nginx's headers say: ``X-Real-IP`` and ``X-Client-Cert`` (the
    URL-escaped PEM of the certificate it verified; absent or empty: none).
    Raises ``MalformedMessage`` for values nginx would never send."""
    # No address header: the unspecified address, as a log line shows it.
    host = _host(address.strip().encode("ascii", "replace")) if address else UNKNOWN_PEER
    pem = unquote(escaped_cert or "").strip()
    if not pem:
        return Handover(host, 0)
    try:
        return Handover(host, 0, ssl.PEM_cert_to_DER_cert(pem + "\n"))
    except ValueError as exc:
        raise MalformedMessage("the front's X-Client-Cert is not a PEM certificate") from exc
