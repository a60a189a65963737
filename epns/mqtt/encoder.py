"""MQTT 3.1.1 packets to bytes, sans-IO.

``encode`` writes any packet. ``publish_bytes`` and ``puback_bytes`` are the
broker's hot paths, written without building a packet object first: a
wake-all writes one PUBLISH per agent, and amqtt's object chain cost about
12 us per message where these take about 1 us (docs/benchmark-history.md,
"Delivery latency").
"""

from __future__ import annotations

from epns.mqtt.packets import (
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
)

__all__ = ["encode", "puback_bytes", "publish_bytes", "remaining_length"]

_MAX_REMAINING = 268_435_455
_PUBACK = bytes((PacketType.PUBACK << 4, 2))


def remaining_length(value: int) -> bytes:
    """The variable-length encoding of a fixed header's remaining length."""
    if not 0 <= value <= _MAX_REMAINING:
        raise ValueError(f"remaining length {value} out of range")
    if value < 128:
        return bytes((value,))
    out = bytearray()
    while True:
        digit, value = value % 128, value // 128
        out.append(digit | 0x80 if value else digit)
        if not value:
            return bytes(out)


def publish_bytes(topic: str, payload: bytes, qos: int, packet_id: int | None, *,
                  dup: bool = False, retain: bool = False) -> bytes:
    """One PUBLISH (section 3.3); ``packet_id`` only with QoS > 0, where it
    is required (MQTT-2.3.1-1): ValueError without it."""
    if qos and not packet_id:
        raise ValueError(f"a QoS {qos} PUBLISH needs a packet id (MQTT-2.3.1-1)")
    name = topic.encode("utf-8")
    first = (PacketType.PUBLISH << 4) | (dup << 3) | (qos << 1) | retain
    ident = packet_id.to_bytes(2, "big") if qos and packet_id else b""
    remaining = 2 + len(name) + len(ident) + len(payload)
    return b"".join((bytes((first,)), remaining_length(remaining),
                     len(name).to_bytes(2, "big"), name, ident, payload))


def puback_bytes(packet_id: int) -> bytes:
    """One PUBACK: four bytes."""
    return _PUBACK + packet_id.to_bytes(2, "big")


def encode(packet: Packet) -> bytes:
    """The bytes of any packet."""
    if isinstance(packet, Publish):
        return publish_bytes(packet.topic, packet.payload, packet.qos, packet.packet_id,
                             dup=packet.dup, retain=packet.retain)
    if isinstance(packet, Puback):
        return puback_bytes(packet.packet_id)
    first, body = _body(packet)
    return bytes((first,)) + remaining_length(len(body)) + body


def _string(text: str) -> bytes:
    return _binary(text.encode("utf-8"))


def _binary(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _id(packet_id: int) -> bytes:
    return packet_id.to_bytes(2, "big")


def _body(packet: Packet) -> tuple[int, bytes]:
    """The first byte and the body of every packet but PUBLISH and PUBACK."""
    match packet:
        case Connect():
            return PacketType.CONNECT << 4, _connect_body(packet)
        case Connack(return_code=code, session_present=present):
            return PacketType.CONNACK << 4, bytes((int(present), code))
        case Pubrec(packet_id=packet_id):
            return PacketType.PUBREC << 4, _id(packet_id)
        case Pubrel(packet_id=packet_id):
            return PacketType.PUBREL << 4 | 0b0010, _id(packet_id)
        case Pubcomp(packet_id=packet_id):
            return PacketType.PUBCOMP << 4, _id(packet_id)
        case Subscribe(packet_id=packet_id, topics=topics):
            return PacketType.SUBSCRIBE << 4 | 0b0010, _id(packet_id) + b"".join(
                _string(topic) + bytes((qos,)) for topic, qos in topics)
        case Suback(packet_id=packet_id, return_codes=codes):
            return PacketType.SUBACK << 4, _id(packet_id) + bytes(codes)
        case Unsubscribe(packet_id=packet_id, topics=topics):
            return PacketType.UNSUBSCRIBE << 4 | 0b0010, _id(packet_id) + b"".join(
                _string(topic) for topic in topics)
        case Unsuback(packet_id=packet_id):
            return PacketType.UNSUBACK << 4, _id(packet_id)
        case Pingreq():
            return PacketType.PINGREQ << 4, b""
        case Pingresp():
            return PacketType.PINGRESP << 4, b""
        case Disconnect():
            return PacketType.DISCONNECT << 4, b""
    raise TypeError(f"not an MQTT packet: {packet!r}")


def _connect_body(packet: Connect) -> bytes:
    """The CONNECT the decoder would accept: ValueError for one it refuses."""
    will = packet.will
    if packet.password is not None and packet.username is None:
        raise ValueError("a password needs a user name (MQTT-3.1.2-22)")
    if will is not None and not 0 <= will.qos <= 2:
        raise ValueError(f"will QoS {will.qos} (MQTT-3.1.2-14)")
    flags = (0x02 if packet.clean_session else 0)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        flags |= 0x40
    parts = [_string("MQTT"), bytes((packet.protocol_level, flags)),
             packet.keep_alive.to_bytes(2, "big"), _string(packet.client_id)]
    if will is not None:
        parts += [_string(will.topic), _binary(will.message)]
    if packet.username is not None:
        parts.append(_string(packet.username))
    if packet.password is not None:
        parts.append(_binary(packet.password))
    return b"".join(parts)
