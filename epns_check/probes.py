"""The network probes: each opens, writes or reads one thing, within a timeout.

They raise what the socket, ssl and HTTP layers raise; ``epns_check.diagnose``
turns that into words. Every socket a probe opens is closed when the probe
fails, and otherwise handed to the caller, who closes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID, NameOID

from epns.mqtt import (
    Connack,
    Decoder,
    Disconnect,
    Packet,
    Puback,
    Publish,
    Role,
    Suback,
    encode,
)
from epns.routes import ProxyEndpoint
from epns_check import websocket
from epns_check.diagnose import PeerCertificate

MAX_PROXY_HEAD = 16 * 1024
# Far above anything the contract sends; a peer that announces more is not
# the broker, and reading on would only buffer its noise.
MAX_PACKET = 256 * 1024
# The answers the check waits for; a PUBLISH in between is kept aside.
Answer = TypeVar("Answer", Connack, Suback, Puback)


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection, as the agent opens it."""
    return socket.create_connection((host, port), timeout=timeout)


@dataclass(frozen=True, slots=True)
class ProxyReply:
    """The status line of a proxy's answer to CONNECT."""

    status: int
    reason: str


def authority(host: str, port: int) -> str:
    """``host:port`` as HTTP writes it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_connect(sock: socket.socket, proxy: ProxyEndpoint, host: str, port: int,
                  timeout: float) -> ProxyReply:
    """Ask the proxy for a tunnel on ``sock``; on 2xx the socket is the tunnel.

    Written by hand, not with python-socks, to see the exact status code."""
    sock.settimeout(timeout)
    target = authority(host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.username is not None:
        secret = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(secret).decode()}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status_line = _read_head(sock).split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
    return ProxyReply(int(code), reason.strip())


def _read_head(sock: socket.socket) -> bytes:
    # One byte at a time: whatever follows the head already belongs to the
    # tunnel, and must stay in the socket for the TLS handshake.
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise EOFError("the proxy closed the connection without an answer")
        head += byte
        if len(head) > MAX_PROXY_HEAD:
            raise ValueError("the proxy's answer has no end")
    return bytes(head)


def handshake(raw: socket.socket, context: ssl.SSLContext, host: str,
              timeout: float) -> ssl.SSLSocket:
    """TLS over ``raw`` with the server name ``host``; closes ``raw`` on failure."""
    raw.settimeout(timeout)
    try:
        sock = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    except BaseException:
        raw.close()
        raise
    try:
        sock.do_handshake()
    except BaseException:
        sock.close()
        raise
    return sock


def unverified_context() -> ssl.SSLContext:
    """A context that accepts any certificate, to read what a peer presents:
    an intercepting middlebox may speak older TLS than the fleet allows."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def presented_certificate(open_raw: Callable[[], socket.socket], host: str, timeout: float,
                          fleet_cas: Sequence[x509.Certificate]) -> PeerCertificate | None:
    """What the peer presents on a second, unverified handshake; None when
    that fails too."""
    try:
        sock = handshake(open_raw(), unverified_context(), host, timeout)
    except (OSError, ValueError):
        return None
    with sock:
        der = sock.getpeercert(binary_form=True)
    return None if der is None else certificate_facts(der, fleet_cas)


def certificate_facts(der: bytes, fleet_cas: Sequence[x509.Certificate]) -> PeerCertificate:
    """The fields of a certificate that diagnose needs."""
    cert = x509.load_der_x509_certificate(der)
    return PeerCertificate(subject=name_of(cert.subject), issuer=name_of(cert.issuer),
                           names=subject_names(cert), not_before=cert.not_valid_before_utc,
                           not_after=cert.not_valid_after_utc,
                           from_fleet_ca=any(issued_by(cert, ca) for ca in fleet_cas))


def name_of(name: x509.Name) -> str:
    """The common name, or the whole name when it has none."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def subject_names(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS names and addresses of the subject alternative names."""
    try:
        sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return ()
    assert isinstance(sans, x509.SubjectAlternativeName)
    dns = sans.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca`` signed ``cert``."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def utc_now() -> dt.datetime:
    """The current time, for certificate dates."""
    return dt.datetime.now(dt.UTC)


class Stream(Protocol):
    """What MQTT runs over: a TLS socket, or a WebSocket on one."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def close(self) -> None: ...


def websocket_upgrade(sock: ssl.SSLSocket, authority: str, path: str,
                      timeout: float) -> tuple[websocket.UpgradeAnswer, bool]:
    """Ask for MQTT over WebSocket on ``sock``; the answer, and whether its
    Sec-WebSocket-Accept proves a WebSocket server read our key."""
    sock.settimeout(timeout)
    key = websocket.new_key()
    sock.sendall(websocket.upgrade_request(authority, path, key))
    answer = websocket.parse_answer(_read_head(sock))
    return answer, answer.accept == websocket.accept_for(key)


class WebSocketStream:
    """MQTT bytes in binary frames over an upgraded TLS socket."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._frames = websocket.FrameReader(MAX_PACKET)
        self._data = bytearray()

    def sendall(self, data: bytes, /) -> None:
        """Send ``data`` as one binary frame."""
        self._sock.sendall(websocket.frame(websocket.BINARY, data))

    def recv(self, size: int, /) -> bytes:
        """Up to ``size`` payload bytes; b"" once the server closes."""
        while not self._data:
            raw = self._sock.recv(65536)
            if not raw:
                return b""
            for item in self._frames.feed(raw):
                if item.opcode == websocket.CLOSE:
                    return b""
                if item.opcode == websocket.PING:
                    self._sock.sendall(websocket.frame(websocket.PONG, item.payload))
                elif item.opcode in (websocket.BINARY, websocket.CONTINUATION):
                    self._data += item.payload
        chunk = bytes(self._data[:size])
        del self._data[:size]
        return chunk

    def settimeout(self, timeout: float | None, /) -> None:
        """Bound the next read."""
        self._sock.settimeout(timeout)

    def close(self) -> None:
        """Close the WebSocket, then the socket."""
        try:
            self._sock.sendall(websocket.frame(websocket.CLOSE, (1000).to_bytes(2, "big")))
        except OSError:
            pass  # already gone: closing is all that is left
        finally:
            self._sock.close()


class MqttSession:
    """MQTT 3.1.1 over a handshaken socket, one packet at a time.

    What the broker sends is read by the strict client-side ``epns.mqtt``
    decoder: an answer the standard forbids raises ``MalformedPacket``
    (an ``EPNSError``) naming what is wrong, for diagnose to report.

    PUBLISH packets that arrive while another packet is awaited are kept in
    ``publishes`` and never acknowledged unless asked: they are commands queued
    for the agent, which the broker re-sends to it when it reconnects."""

    def __init__(self, sock: Stream) -> None:
        self._sock = sock
        self._decoder = Decoder(Role.CLIENT, max_packet_size=MAX_PACKET)
        self.publishes: deque[Publish] = deque()
        self._packet_id = 0

    def next_id(self) -> int:
        """A fresh packet id."""
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id

    def send(self, data: bytes) -> None:
        """Write one packet."""
        self._sock.sendall(data)

    def expect(self, kind: type[Answer], timeout: float) -> Answer:
        """The next packet of ``kind``; TimeoutError, or EOFError when closed."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self._next(deadline)
            if isinstance(packet, kind):
                return packet
            if isinstance(packet, Publish):
                self.publishes.append(packet)

    def next_publish(self, timeout: float) -> Publish:
        """The next PUBLISH, kept ones first."""
        deadline = time.monotonic() + timeout
        while not self.publishes:
            packet = self._next(deadline)
            if isinstance(packet, Publish):
                self.publishes.append(packet)
        return self.publishes.popleft()

    def _next(self, deadline: float) -> Packet:
        # One packet at a time: those before a malformed one are still handed
        # out, in order, before its MalformedPacket.
        while (packet := self._decoder.next_packet()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self._sock.settimeout(remaining)
            data = self._sock.recv(65536)
            if not data:
                raise EOFError("the broker closed the connection")
            self._decoder.feed(data)
        return packet

    def close(self) -> None:
        """DISCONNECT (so no will fires) and close."""
        try:
            self._sock.settimeout(1.0)
            self._sock.sendall(encode(Disconnect()))
        except OSError:
            pass  # already gone: closing is all that is left
        finally:
            self._sock.close()
