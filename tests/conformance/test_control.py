"""MQTT 3.1.1 PINGREQ (3.12), DISCONNECT (3.14), and what is not MQTT at
all: reserved packet types, a server's packet sent by a client, a remaining
length of five bytes, bytes inside a frame that no field takes (4.8)."""

from __future__ import annotations

import pytest

from epns.mqtt import Pingreq, Pingresp, encode
from tests.conformance.wire import Target, frame


@pytest.mark.mqtt("MQTT-3.12.4-1")
def test_pingreq_gets_pingresp(target: Target) -> None:
    conn = target.client()
    conn.send(encode(Pingreq()) * 3)
    for _ in range(3):
        conn.expect(Pingresp)


@pytest.mark.mqtt("MQTT-3.14.1-1")
def test_a_disconnect_with_reserved_bits_set_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(bytes((0xE1, 0x00)) + encode(Pingreq()))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-4.8.0-1")
@pytest.mark.parametrize("packet", [
    pytest.param(bytes((0x00, 0x00)), id="type-0"),
    pytest.param(bytes((0xF0, 0x00)), id="type-15"),
    pytest.param(bytes((0x20, 0x02, 0x00, 0x00)), id="connack-from-a-client"),
    pytest.param(bytes((0x90, 0x03, 0x00, 0x01, 0x00)), id="suback-from-a-client",
                 marks=pytest.mark.xfail_on("mosquitto", "2.0.11 ignores a SUBACK from a client")),
    pytest.param(bytes((0xD0, 0x00)), id="pingresp-from-a-client",
                 marks=pytest.mark.xfail_on("mosquitto",
                                            "2.0.11 ignores a PINGRESP from a client")),
])
def test_a_packet_no_client_may_send_closes_the_connection(target: Target,
                                                           packet: bytes) -> None:
    conn = target.client()
    conn.send(packet + encode(Pingreq()))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-4.8.0-1")
def test_a_remaining_length_of_five_bytes_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(bytes((0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-4.8.0-1")
@pytest.mark.parametrize("packet", [
    pytest.param(frame(0xC0, b"\xc0"), id="pingreq-with-a-body",
                 marks=pytest.mark.xfail_on("mosquitto", "2.0.11 answers a PINGREQ whose "
                                            "remaining length is not 0")),
    pytest.param(frame(0xE0, b"\x00"), id="disconnect-with-a-body"),
    pytest.param(frame(0x40, b"\x00\x01\x00"), id="puback-of-three-bytes",
                 marks=pytest.mark.xfail_on("mosquitto", "2.0.11 reads the packet id of a "
                                            "PUBACK and ignores the byte after it")),
    pytest.param(frame(0x40, b"\x00"), id="puback-of-one-byte"),
])
def test_a_frame_its_fields_do_not_fill_closes_the_connection(target: Target,
                                                              packet: bytes) -> None:
    conn = target.client()
    conn.send(packet + encode(Pingreq()))
    assert conn.closed_within(2)
    assert conn.pending == []
