"""epns.mqtt writes the same PUBLISH bytes as amqtt's PublishPacket (an
independent encoder), and reads what amqtt writes."""

from __future__ import annotations

import pytest
from amqtt.mqtt.publish import PublishPacket

from epns.mqtt import Connect, Decoder, Publish, encode, publish_bytes, remaining_length


@pytest.mark.parametrize("payload_size", [0, 1, 90, 127, 200, 16_383, 16_400, 2_100_000])
@pytest.mark.parametrize(("qos", "packet_id", "dup", "retain"), [
    (0, None, False, False), (0, None, False, True),
    (1, 1, False, False), (1, 65535, True, False), (1, 300, False, True),
    (2, 7, True, True),
])
def test_publish_matches_amqtt(payload_size: int, qos: int, packet_id: int | None,
                               dup: bool, retain: bool) -> None:
    topic = "epns/v1/agents/agent-é-42/cmd"
    payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    stock = PublishPacket.build(topic, payload, packet_id, dup, qos, retain).to_bytes()
    assert publish_bytes(topic, payload, qos, packet_id, dup=dup, retain=retain) == stock
    decoder = Decoder(max_packet_size=3_000_000)
    decoded = decoder.packets(encode(Connect("a")) + stock)[1]
    assert decoded == Publish(topic, payload, qos, retain, dup, packet_id)


@pytest.mark.parametrize(("value", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_remaining_length(value: int, encoded: bytes) -> None:
    # MQTT 3.1.1 section 2.2.3, table 2.4
    assert remaining_length(value) == encoded


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_remaining_length_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        remaining_length(value)
