"""The client side of RFC 6455 that MQTT over secure WebSocket needs, sans-IO:
the upgrade request, the check of its answer, and binary frames."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from epns.errors import ProtocolViolation

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, BINARY, CLOSE, PING, PONG = 0x0, 0x2, 0x8, 0x9, 0xA


def upgrade_request(authority: str, path: str, key: str) -> bytes:
    """GET ``path`` asking for a WebSocket with the ``mqtt`` subprotocol."""
    return (f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n").encode()


def new_key() -> str:
    """A fresh Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a real WebSocket server answers ``key`` with."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455 says SHA-1


@dataclass(frozen=True, slots=True)
class UpgradeAnswer:
    """The status line and the headers that matter of an upgrade answer."""

    status: int
    reason: str
    accept: str | None
    protocol: str | None


def parse_answer(head: bytes) -> UpgradeAnswer:
    """Parse an HTTP answer head (up to the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return UpgradeAnswer(int(code), reason.strip(), headers.get("sec-websocket-accept"),
                         headers.get("sec-websocket-protocol"))


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (clients must mask, RFC 6455 5.3)."""
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


@dataclass(frozen=True, slots=True)
class Frame:
    """A received frame."""

    opcode: int
    payload: bytes


class FrameReader:
    """Bytes in, whole frames out."""

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return every frame now complete."""
        self._buffer += data
        frames = []
        while (found := self._next()) is not None:
            frames.append(found)
        return frames

    def _next(self) -> Frame | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        size, start = buffer[1] & 0x7F, 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if len(buffer) < 2 + width:
                return None
            size, start = int.from_bytes(buffer[2:2 + width], "big"), 2 + width
        if size > self._max_size:
            raise ProtocolViolation(f"WebSocket frame of {size} bytes: not the broker talking")
        mask = b""
        if buffer[1] & 0x80:
            mask, start = bytes(buffer[start:start + 4]), start + 4
        if len(buffer) < start + size:
            return None
        payload = bytes(buffer[start:start + size])
        if mask:
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        opcode = buffer[0] & 0x0F
        del buffer[:start + size]
        return Frame(opcode, payload)
