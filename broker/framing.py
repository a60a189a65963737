"""MQTT 3.1.1 fixed-header framing, sans-IO.

The broker scans every frame's header as bytes arrive, before amqtt decodes it:
oversized and malformed frames are refused without buffering their bodies, and
the frame boundaries let the reader stop any decode that runs past its frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from epns.errors import ProtocolViolation

CONNECT = 1
PUBLISH = 3
PUBREL = 6
SUBSCRIBE = 8
UNSUBSCRIBE = 10
# MQTT 3.1.1 section 2.2.2: the flags every packet type but PUBLISH must carry.
_FIXED_FLAGS = {PUBREL: 0b0010, SUBSCRIBE: 0b0010, UNSUBSCRIBE: 0b0010}
_MAX_LENGTH_BYTES = 4


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A parsed fixed header; the frame is ``header_length + remaining`` bytes."""

    packet_type: int
    flags: int
    remaining: int
    header_length: int

    @property
    def size(self) -> int:
        """Total bytes of the frame."""
        return self.header_length + self.remaining


def parse_header(buffer: bytes | bytearray, start: int, max_size: int) -> FrameHeader | None:
    """Parse the fixed header at ``buffer[start:]``; None if more bytes are needed.

    Raises ProtocolViolation for a reserved type, wrong flags, an over-long
    remaining-length field, or a frame larger than ``max_size``.
    """
    if start >= len(buffer):
        return None
    first = buffer[start]
    packet_type, flags = first >> 4, first & 0x0F
    if packet_type in (0, 15):
        raise ProtocolViolation(f"reserved packet type {packet_type}")
    if packet_type == PUBLISH:
        if flags & 0b0110 == 0b0110:
            raise ProtocolViolation("PUBLISH with QoS 3")
    elif flags != _FIXED_FLAGS.get(packet_type, 0):
        raise ProtocolViolation(f"packet type {packet_type} with invalid flags {flags:#06b}")
    remaining, multiplier = 0, 1
    for index in range(_MAX_LENGTH_BYTES):
        position = start + 1 + index
        if position >= len(buffer):
            return None
        byte = buffer[position]
        remaining += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            header = FrameHeader(packet_type, flags, remaining, index + 2)
            if header.size > max_size:
                raise ProtocolViolation(
                    f"packet of {header.size} bytes exceeds max_packet_size {max_size}"
                )
            return header
        multiplier *= 128
    raise ProtocolViolation("remaining length is longer than 4 bytes")


def connect_keepalive(frame: bytes | bytearray) -> int:
    """The keep-alive seconds of a complete CONNECT frame (fixed header included)."""
    header = parse_header(frame, 0, len(frame))
    if header is None or header.packet_type != CONNECT:
        raise ProtocolViolation("the first packet is not CONNECT")
    body = frame[header.header_length:]
    if len(body) < 2:
        raise ProtocolViolation("CONNECT is truncated")
    name_length = int.from_bytes(body[0:2], "big")
    # protocol name, protocol level (1 byte), connect flags (1 byte), keep-alive (2 bytes)
    offset = 2 + name_length + 2
    if len(body) < offset + 2:
        raise ProtocolViolation("CONNECT is truncated")
    return int.from_bytes(body[offset:offset + 2], "big")
