"""MQTT 3.1.1 packets written and read by hand, for the benchmark's clients.

Only what a simulated agent and the benchmark's publisher need: CONNECT with a
will, SUBSCRIBE, PUBLISH at QoS 0/1, PUBACK, PINGREQ, DISCONNECT, and a frame
splitter for the byte stream. No I/O here.
"""

from __future__ import annotations

import struct

# Control packet types (high nibble of the first byte).
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBACK = 9
PINGRESP = 13
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
SUBACK_FAILURE = 0x80
OFFLINE_PAYLOAD = b'{"v":1,"state":"offline","at":0}'


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def packet(first_byte: int, body: bytes) -> bytes:
    """A whole control packet: fixed header with the variable-length size."""
    size, encoded = len(body), bytearray()
    while True:
        digit, size = size % 128, size // 128
        encoded.append(digit | (0x80 if size else 0))
        if not size:
            break
    return bytes([first_byte]) + bytes(encoded) + body


def connect_packet(client_id: str, keepalive: int, will_topic: str | None = None,
                   will_payload: bytes = b"") -> bytes:
    """CONNECT: clean session off, a retained QoS 1 will when ``will_topic`` is
    given, no username or password (the client certificate is the identity)."""
    flags = 0
    will = b""
    if will_topic is not None:
        will_flag, will_qos1, will_retain = 0x04, 0x08, 0x20
        flags = will_flag | will_qos1 | will_retain
        will = _utf8(will_topic) + struct.pack("!H", len(will_payload)) + will_payload
    body = (_utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
            + _utf8(client_id) + will)
    return packet(0x10, body)


def subscribe_packet(packet_id: int, topic_filters: list[str], qos: int) -> bytes:
    """SUBSCRIBE with one or more filters (fixed-header flags 0b0010 are mandatory)."""
    body = struct.pack("!H", packet_id) + b"".join(_utf8(f) + bytes([qos])
                                                   for f in topic_filters)
    return packet(0x82, body)


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    """PUBLISH, not retained, not a duplicate."""
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def puback_packet(packet_id: int) -> bytes:
    """PUBACK for a QoS 1 PUBLISH."""
    return packet(0x40, struct.pack("!H", packet_id))


def parse_publish(flags: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload) of a PUBLISH body; ``flags`` is the low
    nibble of the first byte."""
    (length,) = struct.unpack_from("!H", body)
    topic = body[2:2 + length].decode()
    position = 2 + length
    packet_id = 0
    if (flags >> 1) & 0x03:
        (packet_id,) = struct.unpack_from("!H", body, position)
        position += 2
    return topic, packet_id, body[position:]


def parse_frame(buffer: bytearray) -> tuple[int, int, bytes, int] | None:
    """(packet type, flags, body, frame size) of the first whole frame, or None."""
    if len(buffer) < 2:
        return None
    remaining, multiplier, position = 0, 1, 1
    while True:
        if position >= len(buffer) or position > 4:
            return None
        byte = buffer[position]
        remaining += (byte & 0x7F) * multiplier
        multiplier *= 128
        position += 1
        if not byte & 0x80:
            break
    end = position + remaining
    if len(buffer) < end:
        return None
    return buffer[0] >> 4, buffer[0] & 0x0F, bytes(buffer[position:end]), end
