"""MQTT 3.1.1 sections 3.3 to 3.7 (PUBLISH and its acknowledgements), the
QoS flows of 4.3, retained messages, and message order (4.6)."""

from __future__ import annotations

import contextlib

import pytest

from epns.mqtt import Puback, Pubcomp, Publish, Pubrec, Pubrel, encode
from tests.conformance.wire import Closed, Target, frame, string


@pytest.mark.mqtt("MQTT-3.3.4-1", "MQTT-4.3.2-2")
def test_qos_1_is_acknowledged_with_puback_of_the_same_packet_id(target: Target) -> None:
    conn = target.client()
    conn.send(Publish(target.topic("q1"), b"x", 1, packet_id=0x1234))
    assert conn.expect(Puback).packet_id == 0x1234


@pytest.mark.mqtt("MQTT-3.3.4-1", "MQTT-4.3.3-2", "MQTT-3.6.1-1")
def test_qos_2_is_received_once_through_pubrec_pubrel_pubcomp(target: Target) -> None:
    topic = target.topic("q2")
    reader = target.client()
    reader.subscribe((topic, 1))
    conn = target.client()
    conn.send(Publish(topic, b"exactly once", 2, packet_id=7))
    assert conn.expect(Pubrec).packet_id == 7
    # The same packet again before PUBREL: PUBREC again, no second delivery.
    conn.send(Publish(topic, b"exactly once", 2, dup=True, packet_id=7))
    assert conn.expect(Pubrec).packet_id == 7
    conn.send(Pubrel(7))
    assert conn.expect(Pubcomp).packet_id == 7
    assert reader.message().payload == b"exactly once"
    reader.expect_none(0.5)
    # After PUBCOMP the packet id is free: the same id is a new message.
    conn.send(Publish(topic, b"a new one", 2, packet_id=7))
    assert conn.expect(Pubrec).packet_id == 7
    conn.send(Pubrel(7))
    assert conn.expect(Pubcomp).packet_id == 7
    assert reader.message().payload == b"a new one"


@pytest.mark.mqtt("MQTT-3.3.1-3")
def test_dup_is_not_passed_on(target: Target) -> None:
    topic = target.topic("dup")
    reader = target.client()
    reader.subscribe((topic, 1))
    conn = target.client()
    conn.send(Publish(topic, b"resent", 1, dup=True, packet_id=4))
    assert conn.expect(Puback).packet_id == 4
    got = reader.message()
    assert (got.payload, got.dup) == (b"resent", False)


@pytest.mark.mqtt("MQTT-3.3.1-4")
def test_a_publish_with_qos_3_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x36, string(target.topic("q3")) + b"\x00\x01payload"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.3.1-2", "MQTT-4.8.0-1")
@pytest.mark.xfail_on("mosquitto", "2.0.11 takes a QoS 0 PUBLISH with DUP set")
def test_a_qos_0_publish_with_dup_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x38, string(target.topic("dup")) + b"payload"))
    assert conn.closed_within(2)


@pytest.mark.mqtt("MQTT-2.3.1-1")
def test_a_qos_1_publish_with_packet_id_0_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x32, string(target.topic("id0")) + b"\x00\x00payload"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.6.1-1")
def test_a_pubrel_with_wrong_flags_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(Publish(target.topic("q2"), b"x", 2, packet_id=3))
    assert conn.expect(Pubrec).packet_id == 3
    conn.send(frame(0x60, b"\x00\x03"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.parametrize("topic", [
    pytest.param("conformance/+/x", marks=pytest.mark.mqtt("MQTT-3.3.2-2", "MQTT-4.7.1-1")),
    pytest.param("conformance/#", marks=pytest.mark.mqtt("MQTT-3.3.2-2", "MQTT-4.7.1-1")),
    pytest.param("", marks=pytest.mark.mqtt("MQTT-4.7.3-1")),
    pytest.param("conformance/a\x00b", marks=pytest.mark.mqtt("MQTT-4.7.3-2", "MQTT-1.5.3-2")),
])
def test_a_publish_to_an_invalid_topic_name_closes_the_connection(target: Target,
                                                                   topic: str) -> None:
    conn = target.client()
    conn.send(frame(0x32, string(topic) + b"\x00\x01payload"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-1.5.3-1", "MQTT-3.3.2-1")
@pytest.mark.parametrize("raw", [b"conformance/\xff", b"conformance/\xed\xa0\x80"],
                         ids=["invalid-byte", "surrogate"])
def test_a_topic_name_that_is_not_utf_8_closes_the_connection(target: Target,
                                                             raw: bytes) -> None:
    conn = target.client()
    conn.send(frame(0x32, string(raw) + b"\x00\x01payload"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.3.5-2")
def test_an_unauthorized_publish_is_acknowledged_or_closed(target: Target) -> None:
    conn = target.client()
    conn.send(Publish("elsewhere/x", b"not allowed", 1, packet_id=9))
    try:
        answer = conn.recv()
    except Closed:
        return  # closing is the other answer the statement allows
    assert answer == Puback(9)


@pytest.mark.mqtt("MQTT-3.3.1-5", "MQTT-3.3.1-6", "MQTT-3.3.1-8")
def test_retained_messages_go_to_a_new_subscription_with_retain_set(target: Target) -> None:
    base = target.topic()
    publisher = target.client()
    publisher.publish(f"{base}/a", b"first", qos=1, retain=True)
    publisher.publish(f"{base}/b", b"second", qos=1, retain=True)
    publisher.publish(f"{base}/a", b"latest", qos=1, retain=True)
    reader = target.client()
    reader.subscribe((f"{base}/+", 1))
    got = sorted((m.topic, m.payload, m.retain, m.qos) for m in (reader.message(),
                                                                reader.message()))
    assert got == [(f"{base}/a", b"latest", True, 1), (f"{base}/b", b"second", True, 1)]
    reader.expect_none(0.3)


@pytest.mark.mqtt("MQTT-3.3.1-9")
def test_an_established_subscription_gets_retain_0(target: Target) -> None:
    topic = target.topic("live")
    reader = target.client()
    reader.subscribe((topic, 1))
    target.client().publish(topic, b"retained", qos=1, retain=True)
    got = reader.message()
    assert (got.payload, got.retain) == (b"retained", False)


@pytest.mark.mqtt("MQTT-3.3.1-10", "MQTT-3.3.1-11")
def test_an_empty_retained_message_removes_the_retained_one(target: Target) -> None:
    topic = target.topic("cleared")
    live = target.client()
    live.subscribe((topic, 1))
    publisher = target.client()
    publisher.publish(topic, b"soon gone", qos=1, retain=True)
    publisher.publish(topic, b"", qos=1, retain=True)
    assert live.message().payload == b"soon gone"
    assert live.message().payload == b""  # processed normally
    late = target.client()
    late.subscribe((topic, 1))
    late.expect_none(0.5)


@pytest.mark.mqtt("MQTT-3.3.1-12")
def test_a_message_without_retain_leaves_the_retained_one(target: Target) -> None:
    topic = target.topic("kept")
    publisher = target.client()
    publisher.publish(topic, b"retained", qos=1, retain=True)
    publisher.publish(topic, b"passing", qos=1)
    late = target.client()
    late.subscribe((topic, 1))
    assert late.message().payload == b"retained"
    late.expect_none(0.3)


@pytest.mark.mqtt("MQTT-3.3.1-7")
def test_a_qos_0_retained_message_replaces_the_retained_one(target: Target) -> None:
    topic = target.topic("replaced")
    publisher = target.client()
    publisher.publish(topic, b"old", qos=1, retain=True)
    publisher.publish(topic, b"new", qos=0, retain=True)
    publisher.publish(target.topic("sync"), b"", qos=1)  # the QoS 0 one is in by now
    late = target.client()
    late.subscribe((topic, 1))
    try:
        got = late.message(1.0)
    except TimeoutError:
        return  # the server MAY discard a QoS 0 retained message
    assert (got.payload, got.qos) == (b"new", 0)


@pytest.mark.mqtt("MQTT-3.8.4-6", "MQTT-3.3.1-2")
@pytest.mark.parametrize(("granted", "sent", "delivered"), [(0, 1, 0), (1, 0, 0), (1, 1, 1)])
def test_delivery_is_at_the_lower_of_publish_and_granted_qos(
        target: Target, granted: int, sent: int, delivered: int) -> None:
    topic = target.topic("qos")
    reader = target.client()
    assert reader.subscribe((topic, granted)).return_codes == (granted,)
    target.client().publish(topic, b"m", qos=sent)
    got = reader.message()
    # The strict decoder refuses DUP on a QoS 0 PUBLISH (MQTT-3.3.1-2).
    assert (got.qos, got.dup) == (delivered, False)


@pytest.mark.mqtt("MQTT-3.3.5-1")
def test_overlapping_subscriptions_deliver_at_their_highest_qos(target: Target) -> None:
    base = target.topic()
    reader = target.client()
    reader.subscribe((f"{base}/#", 0), (f"{base}/x", 1))
    target.client().publish(f"{base}/x", b"m", qos=1)
    copies = [reader.message()]
    with contextlib.suppress(TimeoutError):  # a broker may send a copy per subscription
        copies.append(reader.message(0.5))
    assert max(copy.qos for copy in copies) == 1


@pytest.mark.mqtt("MQTT-4.6.0-5", "MQTT-4.6.0-6")
def test_messages_of_a_topic_arrive_in_the_order_published(target: Target) -> None:
    topic = target.topic("ordered")
    reader = target.client()
    reader.subscribe((topic, 1))
    publisher = target.client()
    payloads = [str(n).encode() for n in range(20)]
    publisher.send(b"".join(encode(Publish(topic, p, 1, packet_id=n + 1))
                            for n, p in enumerate(payloads)))
    assert [publisher.expect(Puback).packet_id for _ in payloads] == list(range(1, 21))
    assert [reader.message().payload for _ in payloads] == payloads
