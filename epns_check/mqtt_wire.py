"""The few MQTT 3.1.1 packets epns-check speaks, sans-IO.

Written out rather than driven through a client library so that every byte
the broker answers is visible: the exact CONNACK code, a SUBACK's 0x80, a
connection closed instead of a PUBACK. Encoders return bytes; ``Reader``
turns received bytes into packets.
"""

from __future__ import annotations

from dataclasses import dataclass

from epns.errors import ProtocolViolation

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
DISCONNECT = 14

SUBACK_FAILURE = 0x80
# Far above anything the contract sends; a peer that announces more is not
# the broker, and reading on would only buffer its noise.
MAX_PACKET = 256 * 1024


@dataclass(frozen=True, slots=True)
class Packet:
    """One received packet: its type, the fixed header's flags and its body."""

    type: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """A received PUBLISH; ``packet_id`` is None at QoS 0."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int | None


def _length(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _length(len(body)) + body


def connect(client_id: str, *, keepalive: int, username: str | None = None,
            password: str | None = None, clean_session: bool = False) -> bytes:
    """CONNECT without a will. ``clean_session`` stays off by default: a clean
    session would delete the agent's own, with the commands queued for it."""
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    header = _string("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + payload)


def subscribe(packet_id: int, topic: str, qos: int = 1) -> bytes:
    """SUBSCRIBE to one filter."""
    return _packet(SUBSCRIBE << 4 | 0x02,
                   packet_id.to_bytes(2, "big") + _string(topic) + bytes([qos]))


def publish(topic: str, payload: bytes, *, packet_id: int) -> bytes:
    """PUBLISH at QoS 1."""
    return _packet(PUBLISH << 4 | 0x02, _string(topic) + packet_id.to_bytes(2, "big") + payload)


def puback(packet_id: int) -> bytes:
    """PUBACK for a received QoS 1 PUBLISH."""
    return _packet(PUBACK << 4, packet_id.to_bytes(2, "big"))


def disconnect() -> bytes:
    """DISCONNECT: a clean end, so no will is published."""
    return _packet(DISCONNECT << 4, b"")


def connack_code(packet: Packet) -> int:
    """The return code of a CONNACK."""
    if len(packet.body) != 2:
        raise ProtocolViolation(f"CONNACK of {len(packet.body)} bytes, expected 2")
    return packet.body[1]


def suback(packet: Packet) -> tuple[int, list[int]]:
    """A SUBACK's packet id and its return codes (granted QoS, or 0x80)."""
    if len(packet.body) < 3:
        raise ProtocolViolation("SUBACK without a return code")
    return int.from_bytes(packet.body[:2], "big"), list(packet.body[2:])


def puback_id(packet: Packet) -> int:
    """The packet id a PUBACK acknowledges."""
    if len(packet.body) != 2:
        raise ProtocolViolation(f"PUBACK of {len(packet.body)} bytes, expected 2")
    return int.from_bytes(packet.body, "big")


def parse_publish(packet: Packet) -> Publish:
    """Topic, QoS, packet id and payload of a PUBLISH."""
    body = packet.body
    if len(body) < 2:
        raise ProtocolViolation("PUBLISH without a topic")
    size = int.from_bytes(body[:2], "big")
    end = 2 + size
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("PUBLISH topic is not UTF-8") from exc
    qos = (packet.flags >> 1) & 0x03
    packet_id = None
    if qos:
        packet_id = int.from_bytes(body[end:end + 2], "big")
        end += 2
    if end > len(body):
        raise ProtocolViolation("PUBLISH shorter than its topic")
    return Publish(topic, bytes(body[end:]), qos, packet_id)


class Reader:
    """Bytes in, whole packets out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Add received bytes; return every packet now complete."""
        self._buffer += data
        packets = []
        while (found := self._next()) is not None:
            packets.append(found)
        return packets

    def _next(self) -> Packet | None:
        buffer = self._buffer
        length, multiplier = 0, 1
        for index in range(1, min(len(buffer), 5)):
            byte = buffer[index]
            length += (byte & 0x7F) * multiplier
            if byte & 0x80:
                multiplier *= 128
                continue
            if length > MAX_PACKET:
                raise ProtocolViolation(f"packet of {length} bytes: not the broker talking")
            start = index + 1
            if len(buffer) < start + length:
                return None
            packet = Packet(buffer[0] >> 4, buffer[0] & 0x0F, bytes(buffer[start:start + length]))
            del buffer[:start + length]
            return packet
        if len(buffer) >= 5:
            raise ProtocolViolation("remaining length is longer than 4 bytes")
        return None
