"""epns.mqtt: every packet round-trips, every forbidden packet is refused
with the statement it breaks, and no byte is smuggled past a frame."""

from __future__ import annotations

import pytest

from epns.errors import MalformedPacket, UnsupportedProtocol
from epns.mqtt import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Role,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    remaining_length,
)

CONNECT = Connect("a01", keep_alive=60)
FROM_CLIENTS: list[Packet] = [
    Connect("agent-7", 300, clean_session=False, will=Will("w/t", b"gone", 1, True),
            username="u", password=b"\x00p"),
    Publish("epns/v1/agents/a01/evt", b"{}", qos=1, packet_id=7),
    Publish("t", b"", qos=0, retain=True),
    Publish("t", b"x" * 300, qos=2, dup=True, packet_id=65535),
    Puback(1), Pubrec(2), Pubrel(3), Pubcomp(4),
    Subscribe(9, (("a/+", 1), ("b/#", 0), ("c", 2))),
    Unsubscribe(10, ("a/+", "c")),
    Pingreq(), Disconnect(),
]
FROM_SERVERS: list[Packet] = [
    Connack(0, session_present=True), Connack(5),
    Publish("epns/v1/all/cmd", b"wake", qos=1, packet_id=1),
    Puback(1), Pubrec(2), Pubrel(3), Pubcomp(4),
    Suback(9, (0, 1, 0x80)), Unsuback(10), Pingresp(),
]


def _server(*packets: bytes) -> list[Packet]:
    return Decoder(Role.SERVER).packets(b"".join(packets))


def _refusal(*packets: bytes, role: Role = Role.SERVER) -> MalformedPacket:
    decoder = Decoder(role)
    with pytest.raises(MalformedPacket) as caught:
        decoder.packets(b"".join(packets))
    return caught.value


@pytest.mark.parametrize("packet", FROM_CLIENTS, ids=repr)
def test_a_client_packet_round_trips(packet: Packet) -> None:
    first = [] if isinstance(packet, Connect) else [encode(CONNECT)]
    decoded = _server(*first, encode(packet))
    assert decoded[-1] == packet


@pytest.mark.parametrize("packet", FROM_SERVERS, ids=repr)
def test_a_server_packet_round_trips(packet: Packet) -> None:
    assert Decoder(Role.CLIENT).packets(encode(packet)) == [packet]


def test_bytes_fed_one_at_a_time_decode_the_same_packets() -> None:
    stream = encode(CONNECT) + b"".join(encode(p) for p in FROM_CLIENTS[1:])
    decoder = Decoder()
    found: list[Packet] = []
    for index in range(len(stream)):
        found += decoder.packets(stream[index:index + 1])
    assert found == [CONNECT, *FROM_CLIENTS[1:]]
    assert decoder.buffered == 0


@pytest.mark.parametrize("value", [0, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_remaining_length_encodes_the_standard_examples(value: int) -> None:
    encoded = remaining_length(value)
    assert len(encoded) == 1 + (value > 127) + (value > 16_383) + (value > 2_097_151)
    frame = bytes((0xC0,)) + encoded  # a PINGREQ header with that length
    decoder = Decoder(Role.SERVER, max_packet_size=1 << 30)
    decoder.feed(encode(CONNECT) + frame)
    assert decoder.next_packet() == CONNECT
    if value == 0:
        assert decoder.next_packet() == Pingreq()
    else:
        assert decoder.next_packet() is None  # the body is still to come


# -- smuggling: the fields must fill the frame exactly -------------------------

def test_a_connect_with_a_subscribe_inside_its_frame_is_refused() -> None:
    """Measured on the amqtt broker: accepted, CONNACK 0."""
    body = encode(CONNECT)[2:] + encode(Subscribe(1, (("#", 0),)))
    smuggled = bytes((0x10,)) + remaining_length(len(body)) + body
    error = _refusal(smuggled)
    assert error.rule == "MQTT-4.8.0-1"
    assert "after its last field" in str(error)


def test_a_connect_that_declares_more_than_it_sends_is_not_a_packet_yet() -> None:
    """Measured on the amqtt broker: 127 declared, 17 sent, CONNACK 0."""
    body = encode(CONNECT)[2:]
    decoder = Decoder()
    decoder.feed(bytes((0x10, 127)) + body)
    assert decoder.next_packet() is None
    decoder.feed(b"\x00" * (127 - len(body)))
    with pytest.raises(MalformedPacket, match="after its last field"):
        decoder.next_packet()


def test_a_length_field_that_runs_past_its_packet_is_refused() -> None:
    publish = encode(Publish("t", b"", qos=0))
    lying = publish[:2] + b"\x00\x09" + publish[4:]  # topic length 9, one byte there
    error = _refusal(encode(CONNECT), lying)
    assert error.rule == "MQTT-4.8.0-1"
    assert "runs past the end" in str(error)


@pytest.mark.parametrize("packet", [Puback(1), Pubrec(1), Pubrel(1), Pubcomp(1)], ids=repr)
def test_an_acknowledgement_with_trailing_bytes_is_refused(packet: Packet) -> None:
    raw = bytearray(encode(packet))
    raw[1] = 3
    raw.append(0)
    assert _refusal(encode(CONNECT), bytes(raw)).rule == "MQTT-4.8.0-1"


@pytest.mark.parametrize("first", [0xC0, 0xE0], ids=["PINGREQ", "DISCONNECT"])
def test_an_empty_packet_with_a_body_is_refused(first: int) -> None:
    assert _refusal(encode(CONNECT), bytes((first, 1, 0))).rule == "MQTT-4.8.0-1"


# -- each statement ---------------------------------------------------------------

def _connect_with(flags: int, payload: bytes = b"\x00\x03a01", level: int = 4,
                  name: bytes = b"MQTT") -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes((level, flags)) + b"\x00\x3c" + payload
    return bytes((0x10,)) + remaining_length(len(body)) + body


@pytest.mark.parametrize(("raw", "rule"), [
    (encode(Pingreq()), "MQTT-3.1.0-1"),
    (encode(CONNECT) + encode(CONNECT), "MQTT-3.1.0-2"),
    (_connect_with(0x02, name=b"MQTX"), "MQTT-3.1.2-1"),
    (_connect_with(0x03), "MQTT-3.1.2-3"),
    (_connect_with(0x02 | 0x08), "MQTT-3.1.2-13"),
    (_connect_with(0x02 | 0x04 | 0x18, b"\x00\x03a01\x00\x01t\x00\x00"), "MQTT-3.1.2-14"),
    (_connect_with(0x02 | 0x20), "MQTT-3.1.2-15"),
    (_connect_with(0x02 | 0x40, b"\x00\x03a01\x00\x01p"), "MQTT-3.1.2-22"),
    (_connect_with(0x02 | 0x80), "MQTT-4.8.0-1"),  # user name flag, no user name
    (_connect_with(0x02, b"\x00\x02\xc3\x28"), "MQTT-1.5.3-1"),
    (_connect_with(0x02, b"\x00\x03\xed\xa0\x80"), "MQTT-1.5.3-1"),  # a UTF-16 surrogate
    (_connect_with(0x02, b"\x00\x02a\x00"), "MQTT-1.5.3-2"),
    (_connect_with(0x02 | 0x04, b"\x00\x03a01\x00\x03a/#\x00\x00"), "MQTT-3.3.2-2"),
    (encode(CONNECT) + bytes((0x38, 4, 0, 1, 0x74, 0)), "MQTT-3.3.1-2"),  # QoS 0 with DUP
    (encode(CONNECT) + bytes((0x36, 5, 0, 1, 0x74, 0, 1)), "MQTT-3.3.1-4"),  # QoS 3
    (encode(CONNECT) + bytes((0x32, 5, 0, 1, 0x74, 0, 0)), "MQTT-2.3.1-1"),  # packet id 0
    (encode(CONNECT) + bytes((0x30, 4, 0, 1, 0x2B, 0)), "MQTT-3.3.2-2"),  # topic '+'
    (encode(CONNECT) + bytes((0x30, 2, 0, 0)), "MQTT-4.7.3-1"),  # empty topic
    (encode(CONNECT) + bytes((0x80, 6, 0, 1, 0, 1, 0x61, 0)), "MQTT-3.8.1-1"),
    (encode(CONNECT) + bytes((0x82, 2, 0, 1)), "MQTT-3.8.3-3"),
    (encode(CONNECT) + bytes((0x82, 6, 0, 1, 0, 1, 0x61, 3)), "MQTT-3.8.3-4"),
    (encode(CONNECT) + bytes((0x82, 6, 0, 1, 0, 1, 0x61, 0x41)), "MQTT-3.8.3-4"),
    (encode(CONNECT) + bytes((0x82, 5, 0, 1, 0, 0, 0)), "MQTT-4.7.3-1"),
    (encode(CONNECT) + encode(Subscribe(1, (("a/#/b", 0),))), "MQTT-4.7.1-2"),
    (encode(CONNECT) + encode(Subscribe(1, (("a", 0), ("a+", 0)))), "MQTT-4.7.1-3"),
    (encode(CONNECT) + encode(Unsubscribe(1, ("a#",))), "MQTT-4.7.1-2"),
    (encode(CONNECT) + bytes((0xA0, 5, 0, 1, 0, 1, 0x61)), "MQTT-3.10.1-1"),
    (encode(CONNECT) + bytes((0xA2, 2, 0, 1)), "MQTT-3.10.3-2"),
    (encode(CONNECT) + bytes((0x60, 2, 0, 1)), "MQTT-3.6.1-1"),
    (encode(CONNECT) + bytes((0xE1, 0)), "MQTT-3.14.1-1"),
    (encode(CONNECT) + bytes((0xC1, 0)), "MQTT-2.2.2-2"),
    (encode(CONNECT) + bytes((0xF0, 0)), "MQTT-2.2.2-2"),
    (encode(CONNECT) + bytes((0x00, 0)), "MQTT-2.2.2-2"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_each_forbidden_packet_names_its_statement(raw: bytes, rule: str) -> None:
    assert _refusal(raw).rule == rule


@pytest.mark.parametrize(("level", "name"), [(3, b"MQTT"), (5, b"MQTT"), (3, b"MQIsdp")])
def test_another_protocol_level_is_answered_with_connack_1(level: int, name: bytes) -> None:
    """MQTT-3.1.2-2; an MQTT 5 CONNECT is not parsed past its level byte."""
    with pytest.raises(UnsupportedProtocol) as caught:
        _server(_connect_with(0x02, b"\x00\x00", level=level, name=name))
    assert caught.value.level == level
    assert caught.value.rule == "MQTT-3.1.2-2"


def test_a_packet_a_server_never_receives_is_refused() -> None:
    assert "never receives CONNACK" in str(_refusal(encode(CONNECT), encode(Connack())))
    assert "never receives SUBSCRIBE" in str(_refusal(encode(Subscribe(1, (("a", 0),))),
                                                      role=Role.CLIENT))


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = Decoder(Role.SERVER, max_packet_size=1024)
    decoder.feed(encode(CONNECT) + bytes((0x30,)) + remaining_length(5000))
    assert decoder.next_packet() == CONNECT
    with pytest.raises(MalformedPacket, match="exceeds the maximum packet size 1024"):
        decoder.next_packet()


def test_a_remaining_length_of_five_bytes_is_refused() -> None:
    assert "four bytes" in str(_refusal(encode(CONNECT), b"\x30\xff\xff\xff\xff\x01"))


def test_the_packets_before_a_bad_one_are_returned_in_order() -> None:
    decoder = Decoder()
    decoder.feed(encode(CONNECT) + encode(Pingreq()) + b"\xf0\x00")
    assert decoder.next_packet() == CONNECT
    assert decoder.next_packet() == Pingreq()
    with pytest.raises(MalformedPacket):
        decoder.next_packet()


def test_connack_flags_are_checked_on_the_client_side() -> None:
    assert _refusal(bytes((0x20, 2, 1, 5)), role=Role.CLIENT).rule == "MQTT-3.2.2-4"
    assert "reserved CONNACK return code" in str(_refusal(bytes((0x20, 2, 0, 6)),
                                                          role=Role.CLIENT))
    assert _refusal(bytes((0x90, 3, 0, 1, 3)), role=Role.CLIENT).rule == "MQTT-3.9.3-2"


def test_the_encoder_refuses_what_the_decoder_refuses() -> None:
    """epns-check and the benchmarks build packets with it: a packet it
    writes must be one a strict broker takes."""
    with pytest.raises(ValueError, match=r"MQTT-2\.3\.1-1"):
        encode(Publish("t", b"", qos=1))
    with pytest.raises(ValueError, match=r"MQTT-3\.1\.2-22"):
        encode(Connect("a", password=b"p"))
    with pytest.raises(ValueError, match=r"MQTT-3\.1\.2-14"):
        encode(Connect("a", will=Will("t", b"", qos=3)))
