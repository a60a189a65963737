"""Bytes in, MQTT 3.1.1 packets out: a strict decoder, sans-IO.

Feed it what the socket gave (``feed``), then take packets (``next_packet``)
until it says it needs more. It never reads a socket and never blocks.

It is strict where a lenient parser lets a client smuggle bytes past the
checks that follow it: every packet's fields must fill its remaining length
exactly (a CONNECT that carries a SUBSCRIBE after its last field is refused,
not half-read), every flag the standard reserves is checked, and every string
must be well-formed UTF-8 without U+0000. Each refusal is a
``MalformedPacket`` naming the statement it breaks (``MQTT-3.1.2-3``); the
caller closes the connection (MQTT-4.8.0-1).

A fixed header is checked as soon as its bytes are in, before the body: a
frame over ``max_packet_size``, a reserved type, a packet this side must
never receive, or a first packet that is not CONNECT is refused without
buffering its body.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from epns.errors import MalformedPacket, UnsupportedProtocol
from epns.mqtt.filters import filter_error, is_wildcard
from epns.mqtt.packets import (
    SUBACK_FAILURE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)

__all__ = ["MAX_REMAINING_LENGTH", "Decoder", "Role"]

# Section 2.2.3: four length bytes hold at most this.
MAX_REMAINING_LENGTH = 268_435_455
_LENGTH_BYTES = 4
# Compact the buffer once this much of its head has been decoded.
_COMPACT_AT = 16 * 1024


class Role(StrEnum):
    """Which end of the connection decodes: a server reads what clients send."""

    SERVER = "server"
    CLIENT = "client"


# A dict lookup: PacketType(value) costs about ten times as much per packet.
_TYPES = {kind.value: kind for kind in PacketType}
_SENT_BY_CLIENTS = frozenset({
    PacketType.CONNECT, PacketType.PUBLISH, PacketType.PUBACK, PacketType.PUBREC,
    PacketType.PUBREL, PacketType.PUBCOMP, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE,
    PacketType.PINGREQ, PacketType.DISCONNECT,
})
_SENT_BY_SERVERS = frozenset({
    PacketType.CONNACK, PacketType.PUBLISH, PacketType.PUBACK, PacketType.PUBREC,
    PacketType.PUBREL, PacketType.PUBCOMP, PacketType.SUBACK, PacketType.UNSUBACK,
    PacketType.PINGRESP,
})
# Section 2.2.2: the flags of every type but PUBLISH, and the statement each breaks.
_FLAGS = {
    PacketType.PUBREL: (0b0010, "MQTT-3.6.1-1"),
    PacketType.SUBSCRIBE: (0b0010, "MQTT-3.8.1-1"),
    PacketType.UNSUBSCRIBE: (0b0010, "MQTT-3.10.1-1"),
    PacketType.DISCONNECT: (0, "MQTT-3.14.1-1"),
}


class Decoder:
    """The packets one side of a connection receives, decoded in order.

    As a server (the default) it also holds the one rule about order the
    codec can see: the first packet is CONNECT (MQTT-3.1.0-1), and there is
    no second (MQTT-3.1.0-2).
    """

    def __init__(self, role: Role = Role.SERVER,
                 max_packet_size: int = MAX_REMAINING_LENGTH + 5) -> None:
        self.role = role
        self.max_packet_size = max_packet_size
        self._accepted = _SENT_BY_CLIENTS if role is Role.SERVER else _SENT_BY_SERVERS
        self._buffer = bytearray()
        self._at = 0
        self._connect_seen = role is Role.CLIENT
        # The checked header of the frame whose body is still coming:
        # (type, flags, body offset, remaining length).
        self._frame: tuple[PacketType, int, int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded."""
        return len(self._buffer) - self._at

    def feed(self, data: bytes) -> None:
        """Add bytes as they came from the connection."""
        self._buffer += data

    def next_packet(self) -> Packet | None:
        """The next whole packet, or None until more bytes are fed.

        Raises MalformedPacket (the connection must be closed); the packets
        before the bad one were returned already, in order.
        """
        buffer = self._buffer
        if self._frame is None:
            header = _fixed_header(buffer, self._at)
            if header is None:
                return None
            first, remaining, header_length = header
            kind = self._check_header(first, header_length + remaining)
            self._frame = (kind, first & 0x0F, self._at + header_length, remaining)
        kind, flags, start, remaining = self._frame
        end = start + remaining
        if end > len(buffer):
            return None
        self._frame = None
        body = bytes(buffer[start:end])
        self._at = end
        if end == len(buffer):
            buffer.clear()
            self._at = 0
        elif end >= _COMPACT_AT:
            del buffer[:end]
            self._at = 0
        return _DECODERS[kind](flags, body)

    def packets(self, data: bytes) -> list[Packet]:
        """Feed ``data`` and take every whole packet it completes."""
        self.feed(data)
        found: list[Packet] = []
        while (packet := self.next_packet()) is not None:
            found.append(packet)
        return found

    def _check_header(self, first: int, size: int) -> PacketType:
        value, flags = first >> 4, first & 0x0F
        kind = _TYPES.get(value)
        if kind is None:
            raise MalformedPacket(f"reserved packet type {value}", "MQTT-2.2.2-2")
        if kind not in self._accepted:
            raise MalformedPacket(f"a {self.role.value} never receives {kind.name}")
        if kind is PacketType.CONNECT:
            if self._connect_seen:
                raise MalformedPacket("a second CONNECT", "MQTT-3.1.0-2")
            self._connect_seen = True
        elif not self._connect_seen:
            raise MalformedPacket(f"the first packet is {kind.name}, not CONNECT", "MQTT-3.1.0-1")
        expected = _FLAGS.get(kind)
        if kind is PacketType.PUBLISH:
            if flags & 0b0110 == 0b0110:
                raise MalformedPacket("PUBLISH with QoS 3", "MQTT-3.3.1-4")
        elif flags != (expected[0] if expected else 0):
            rule = expected[1] if expected else "MQTT-2.2.2-2"
            raise MalformedPacket(f"{kind.name} with reserved flags {flags:#06b}", rule)
        if size > self.max_packet_size:
            raise MalformedPacket(
                f"{kind.name} of {size} bytes exceeds the maximum packet size "
                f"{self.max_packet_size}")
        return kind


def _fixed_header(buffer: bytearray, at: int) -> tuple[int, int, int] | None:
    """(first byte, remaining length, header length) at ``at``; None if partial."""
    available = len(buffer) - at
    if available < 2:
        return None
    remaining, multiplier = 0, 1
    for index in range(_LENGTH_BYTES):
        if 1 + index >= available:
            return None
        byte = buffer[at + 1 + index]
        remaining += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return buffer[at], remaining, index + 2
        multiplier *= 128
    raise MalformedPacket("the remaining length runs past four bytes (section 2.2.3)")


class _Fields:
    """Reads a packet body field by field; never past its end."""

    __slots__ = ("at", "body", "kind")

    def __init__(self, kind: str, body: bytes) -> None:
        self.kind = kind
        self.body = body
        self.at = 0

    def left(self) -> int:
        return len(self.body) - self.at

    def take(self, count: int, what: str) -> bytes:
        if count > len(self.body) - self.at:
            raise MalformedPacket(
                f"{self.kind}'s {what} runs past the end of the packet "
                f"({count} bytes wanted, {len(self.body) - self.at} left)", "MQTT-4.8.0-1")
        value = self.body[self.at:self.at + count]
        self.at += count
        return value

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def uint16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def binary(self, what: str) -> bytes:
        return self.take(self.uint16(f"{what} length"), what)

    def string(self, what: str) -> str:
        return _utf8(self.binary(what), f"{self.kind}'s {what}")

    def packet_id(self) -> int:
        value = self.uint16("packet identifier")
        if value == 0:
            raise MalformedPacket(f"{self.kind} with packet identifier 0", "MQTT-2.3.1-1")
        return value

    def end(self) -> None:
        """Every byte of the remaining length was a field."""
        if self.at != len(self.body):
            raise MalformedPacket(
                f"{self.kind} carries {len(self.body) - self.at} bytes after its last field "
                f"(remaining length {len(self.body)})", "MQTT-4.8.0-1")


def _utf8(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{what} is not well-formed UTF-8 ({exc.reason})",
                              "MQTT-1.5.3-1") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000", "MQTT-1.5.3-2")
    return text


def _topic_name(text: str, what: str) -> str:
    if not text:
        raise MalformedPacket(f"{what} is empty", "MQTT-4.7.3-1")
    if is_wildcard(text):
        raise MalformedPacket(f"{what} {text!r} contains a wildcard", "MQTT-3.3.2-2")
    return text


def _topic_filter(text: str) -> str:
    if not text:
        raise MalformedPacket("an empty topic filter", "MQTT-4.7.3-1")
    rule = filter_error(text)
    if rule is not None:
        raise MalformedPacket(f"topic filter {text!r} has a wildcard where none may stand", rule)
    return text


# -- one function per packet type: (flags, body) -> packet ------------------

def _connect(_: int, body: bytes) -> Connect:
    fields = _Fields("CONNECT", body)
    name = fields.string("protocol name")
    level = fields.byte("protocol level")
    if name == "MQIsdp":  # MQTT 3.1: answered as a protocol level it is
        raise UnsupportedProtocol(level)
    if name != "MQTT":
        raise MalformedPacket(f"protocol name {name!r} is not 'MQTT'", "MQTT-3.1.2-1")
    if level != 4:
        raise UnsupportedProtocol(level)
    flags = fields.byte("connect flags")
    keep_alive = fields.uint16("keep alive")
    if flags & 0x01:
        raise MalformedPacket("CONNECT's reserved flag is set", "MQTT-3.1.2-3")
    will_flag, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    has_username, has_password = bool(flags & 0x80), bool(flags & 0x40)
    if not will_flag and will_qos:
        raise MalformedPacket("a will QoS without the will flag", "MQTT-3.1.2-13")
    if not will_flag and will_retain:
        raise MalformedPacket("will retain without the will flag", "MQTT-3.1.2-15")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3", "MQTT-3.1.2-14")
    if has_password and not has_username:
        raise MalformedPacket("a password flag without the user name flag", "MQTT-3.1.2-22")
    client_id = fields.string("client identifier")
    will = None
    if will_flag:
        topic = _topic_name(fields.string("will topic"), "the will topic")
        will = Will(topic, fields.binary("will message"), will_qos, will_retain)
    username = fields.string("user name") if has_username else None
    password = fields.binary("password") if has_password else None
    fields.end()
    return Connect(client_id, keep_alive, bool(flags & 0x02), will, username, password, level)


def _connack(_: int, body: bytes) -> Connack:
    fields = _Fields("CONNACK", body)
    flags, code = fields.byte("acknowledge flags"), fields.byte("return code")
    fields.end()
    if flags & 0xFE:
        raise MalformedPacket(f"CONNACK's reserved flags {flags:#04x}")
    if code > 5:
        raise MalformedPacket(f"reserved CONNACK return code {code}")
    if code and flags:
        raise MalformedPacket("session present with a refusal", "MQTT-3.2.2-4")
    return Connack(code, bool(flags))


def _publish(flags: int, body: bytes) -> Publish:
    qos, dup, retain = (flags >> 1) & 0x03, bool(flags & 0x08), bool(flags & 0x01)
    if dup and not qos:
        raise MalformedPacket("DUP set on a QoS 0 PUBLISH", "MQTT-3.3.1-2")
    fields = _Fields("PUBLISH", body)
    topic = _topic_name(fields.string("topic name"), "the topic name")
    packet_id = fields.packet_id() if qos else None
    return Publish(topic, body[fields.at:], qos, retain, dup, packet_id)


def _identified(name: str, body: bytes) -> int:
    """The packet id that is the whole body of PUBACK, PUBREC, PUBREL,
    PUBCOMP and UNSUBACK."""
    fields = _Fields(name, body)
    packet_id = fields.packet_id()
    fields.end()
    return packet_id


def _puback(_: int, body: bytes) -> Puback:
    if len(body) == 2:  # the hot path of a wake-all: one per agent
        packet_id = (body[0] << 8) | body[1]
        if packet_id:
            return Puback(packet_id)
    return Puback(_identified("PUBACK", body))


def _subscribe(_: int, body: bytes) -> Subscribe:
    fields = _Fields("SUBSCRIBE", body)
    packet_id = fields.packet_id()
    topics: list[tuple[str, int]] = []
    while fields.left():
        topic_filter = _topic_filter(fields.string("topic filter"))
        requested = fields.byte("requested QoS")
        if requested > 2:
            raise MalformedPacket(f"requested QoS byte {requested:#04x}", "MQTT-3.8.3-4")
        topics.append((topic_filter, requested))
    if not topics:
        raise MalformedPacket("SUBSCRIBE without a topic filter", "MQTT-3.8.3-3")
    return Subscribe(packet_id, tuple(topics))


def _suback(_: int, body: bytes) -> Suback:
    fields = _Fields("SUBACK", body)
    packet_id = fields.packet_id()
    codes = tuple(fields.take(fields.left(), "return codes"))
    if not codes or any(code not in (0, 1, 2, SUBACK_FAILURE) for code in codes):
        raise MalformedPacket(f"SUBACK return codes {list(codes)}", "MQTT-3.9.3-2")
    return Suback(packet_id, codes)


def _unsubscribe(_: int, body: bytes) -> Unsubscribe:
    fields = _Fields("UNSUBSCRIBE", body)
    packet_id = fields.packet_id()
    topics: list[str] = []
    while fields.left():
        topics.append(_topic_filter(fields.string("topic filter")))
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE without a topic filter", "MQTT-3.10.3-2")
    return Unsubscribe(packet_id, tuple(topics))


def _empty(name: str, body: bytes) -> None:
    if body:
        raise MalformedPacket(f"{name} with a body of {len(body)} bytes (its remaining "
                              "length is 0)", "MQTT-4.8.0-1")


def _pingreq(_: int, body: bytes) -> Pingreq:
    _empty("PINGREQ", body)
    return Pingreq()


def _pingresp(_: int, body: bytes) -> Pingresp:
    _empty("PINGRESP", body)
    return Pingresp()


def _disconnect(_: int, body: bytes) -> Disconnect:
    _empty("DISCONNECT", body)
    return Disconnect()


_DECODERS: dict[PacketType, Callable[[int, bytes], Packet]] = {
    PacketType.CONNECT: _connect,
    PacketType.CONNACK: _connack,
    PacketType.PUBLISH: _publish,
    PacketType.PUBACK: _puback,
    PacketType.PUBREC: lambda _, body: Pubrec(_identified("PUBREC", body)),
    PacketType.PUBREL: lambda _, body: Pubrel(_identified("PUBREL", body)),
    PacketType.PUBCOMP: lambda _, body: Pubcomp(_identified("PUBCOMP", body)),
    PacketType.SUBSCRIBE: _subscribe,
    PacketType.SUBACK: _suback,
    PacketType.UNSUBSCRIBE: _unsubscribe,
    PacketType.UNSUBACK: lambda _, body: Unsuback(_identified("UNSUBACK", body)),
    PacketType.PINGREQ: _pingreq,
    PacketType.PINGRESP: _pingresp,
    PacketType.DISCONNECT: _disconnect,
}
