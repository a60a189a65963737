"""broker.framing: MQTT 3.1.1 fixed headers, scanned before amqtt decodes."""

from __future__ import annotations

import pytest
from amqtt.mqtt.connect import ConnectPacket, ConnectPayload, ConnectVariableHeader

from broker.framing import FrameHeader, connect_keepalive, parse_header
from epns.errors import ProtocolViolation
from tests.support.clients import encode_length

BIG = 1 << 30


def _connect_frame(keep_alive: int, client_id: str = "agent-1", **payload: str) -> bytes:
    header = ConnectVariableHeader(keep_alive=keep_alive)
    header.clean_session_flag = True
    if "username" in payload:
        header.username_flag = True
    if "password" in payload:
        header.password_flag = True
    packet = ConnectPacket(
        variable_header=header, payload=ConnectPayload(client_id=client_id, **payload)
    )
    return bytes(packet.to_bytes())


# --- remaining length ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length(length: int, encoded: bytes) -> None:
    assert encode_length(length) == encoded
    header = parse_header(b"\x30" + encoded, 0, BIG)
    assert header == FrameHeader(packet_type=3, flags=0, remaining=length,
                                 header_length=1 + len(encoded))
    assert header.size == 1 + len(encoded) + length


def test_header_at_an_offset() -> None:
    buffer = b"\xe0\x00" + b"\x82\x05\x00\x01"  # DISCONNECT, then a SUBSCRIBE header
    first = parse_header(buffer, 0, BIG)
    assert first == FrameHeader(14, 0, 0, 2)
    second = parse_header(buffer, first.size, BIG)
    assert second == FrameHeader(8, 0b0010, 5, 2)
    assert parse_header(bytearray(buffer), 2, BIG) == second


@pytest.mark.parametrize(
    "buffer",
    [b"", b"\x30", b"\x30\x80", b"\x30\xff\xff", b"\x30\xff\xff\xff", b"\x10\x80"],
)
def test_incomplete_header(buffer: bytes) -> None:
    assert parse_header(buffer, 0, BIG) is None


def test_start_past_the_end() -> None:
    assert parse_header(b"\xc0\x00", 2, BIG) is None
    assert parse_header(b"\xc0\x00", 5, BIG) is None


def test_header_is_complete_before_the_body() -> None:
    # the header alone is enough; the body need not have arrived
    assert parse_header(b"\x30\x80\x01", 0, BIG) == FrameHeader(3, 0, 128, 3)


@pytest.mark.parametrize("buffer", [b"\x30\xff\xff\xff\xff", b"\x30\x80\x80\x80\x80\x01"])
def test_remaining_length_over_four_bytes(buffer: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="longer than 4 bytes"):
        parse_header(buffer, 0, BIG)


# --- packet types and flags ---------------------------------------------------------


@pytest.mark.parametrize("first", [0x00, 0x0F, 0xF0, 0xFF, 0x02])
def test_reserved_types(first: int) -> None:
    with pytest.raises(ProtocolViolation, match="reserved packet type"):
        parse_header(bytes([first, 0]), 0, BIG)


@pytest.mark.parametrize(
    ("packet_type", "flags"),
    [
        (1, 0), (2, 0), (4, 0), (5, 0), (6, 0b0010), (7, 0), (8, 0b0010), (9, 0),
        (10, 0b0010), (11, 0), (12, 0), (13, 0), (14, 0),
    ],
)
def test_required_flags_accepted(packet_type: int, flags: int) -> None:
    header = parse_header(bytes([packet_type << 4 | flags, 0]), 0, BIG)
    assert header == FrameHeader(packet_type, flags, 0, 2)


@pytest.mark.parametrize(
    ("packet_type", "flags"),
    [
        (1, 0b0010), (2, 0b0001), (4, 0b1000), (5, 0b0010), (6, 0), (6, 0b0011),
        (7, 0b0010), (8, 0), (8, 0b1010), (9, 0b0010), (10, 0), (10, 0b0110),
        (11, 0b0010), (12, 0b0001), (13, 0b1111), (14, 0b0010),
    ],
)
def test_wrong_flags(packet_type: int, flags: int) -> None:
    with pytest.raises(ProtocolViolation, match=f"packet type {packet_type} with invalid flags"):
        parse_header(bytes([packet_type << 4 | flags, 0]), 0, BIG)


@pytest.mark.parametrize("flags", [0b0000, 0b0001, 0b0010, 0b0011, 0b0100, 0b0101, 0b1010,
                                   0b1011, 0b1100, 0b1101])
def test_publish_flags(flags: int) -> None:
    header = parse_header(bytes([0x30 | flags, 0]), 0, BIG)
    assert header is not None
    assert header.flags == flags


@pytest.mark.parametrize("flags", [0b0110, 0b0111, 0b1110, 0b1111])
def test_publish_qos_3(flags: int) -> None:
    with pytest.raises(ProtocolViolation, match="QoS 3"):
        parse_header(bytes([0x30 | flags, 0]), 0, BIG)


def test_bad_first_byte_is_refused_before_the_length_arrives() -> None:
    with pytest.raises(ProtocolViolation):
        parse_header(b"\x36", 0, BIG)
    with pytest.raises(ProtocolViolation):
        parse_header(b"\x00", 0, BIG)


# --- size limit ---------------------------------------------------------------------


def test_max_size_is_inclusive() -> None:
    assert parse_header(b"\x30\x7f", 0, 129) == FrameHeader(3, 0, 127, 2)
    with pytest.raises(ProtocolViolation, match="packet of 129 bytes exceeds max_packet_size 128"):
        parse_header(b"\x30\x7f", 0, 128)


def test_oversize_is_refused_from_the_header_alone() -> None:
    header = b"\x30" + encode_length(10_000_000)
    with pytest.raises(ProtocolViolation, match="exceeds max_packet_size 65536"):
        parse_header(header, 0, 65_536)


# --- CONNECT keep-alive -------------------------------------------------------------


@pytest.mark.parametrize("keep_alive", [0, 1, 60, 1234, 65_535])
def test_connect_keepalive(keep_alive: int) -> None:
    frame = _connect_frame(keep_alive)
    assert frame[0] == 0x10
    assert connect_keepalive(frame) == keep_alive
    assert connect_keepalive(bytearray(frame)) == keep_alive


def test_connect_keepalive_with_credentials() -> None:
    frame = _connect_frame(300, username="agent-1", password="v1.x.y")
    assert connect_keepalive(frame) == 300


def test_connect_keepalive_hand_built_mqtt31() -> None:
    # MQTT 3.1: protocol name "MQIsdp" (6 bytes), level 3
    body = b"\x00\x06MQIsdp\x03\x02\x00\x2a\x00\x01c"
    frame = b"\x10" + encode_length(len(body)) + body
    assert connect_keepalive(frame) == 42


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x10",
        b"\x30\x00",
        b"\x20\x02\x00\x00",  # CONNACK
        b"\x10\x00",
        b"\x10\x01\x00",
        b"\x10\x07\x00\x04MQTT\x04",  # keep-alive missing
        b"\x10\x09\x00\x04MQTT\x04\x02\x00",  # half a keep-alive
    ],
)
def test_connect_keepalive_refuses(frame: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        connect_keepalive(frame)


def test_connect_keepalive_refuses_a_frame_shorter_than_announced() -> None:
    frame = _connect_frame(60)
    with pytest.raises(ProtocolViolation):
        connect_keepalive(frame[:-3])
