"""MQTT 3.1.1 sections 3.8 to 3.11 (SUBSCRIBE, SUBACK, UNSUBSCRIBE,
UNSUBACK) and topic filters (4.7)."""

from __future__ import annotations

import pytest

from epns.mqtt import SUBACK_FAILURE, Suback, Subscribe, Unsuback, Unsubscribe, encode
from tests.conformance.wire import Target, frame, string


@pytest.mark.mqtt("MQTT-3.8.4-1", "MQTT-3.8.4-2")
def test_suback_carries_the_packet_id_of_its_subscribe(target: Target) -> None:
    conn = target.client()
    conn.send(Subscribe(0xBEEF, ((target.topic("x"), 1),)))
    assert conn.expect(Suback) == Suback(0xBEEF, (1,))


@pytest.mark.mqtt("MQTT-3.8.4-4", "MQTT-3.8.4-5", "MQTT-3.9.3-1", "MQTT-3.9.3-2")
def test_one_suback_answers_every_filter_in_order(target: Target) -> None:
    """A refused filter (outside the client's ACL) in the middle, and a QoS 2
    request, which a server may grant at a lower QoS (the epns broker grants 1)."""
    base = target.topic()
    conn = target.client()
    conn.send(Subscribe(5, ((f"{base}/zero", 0), ("elsewhere/x", 1), (f"{base}/two", 2),
                            (f"{base}/one", 1))))
    suback = conn.expect(Suback)
    assert suback.packet_id == 5
    zero, refused, two, one = suback.return_codes
    assert (zero, one) == (0, 1)
    # Mosquitto grants a filter its ACL refuses, and delivers nothing to it.
    assert refused in ((SUBACK_FAILURE,) if target.kind == "epns" else (SUBACK_FAILURE, 1))
    assert two in (1, 2)
    conn.expect_none(0.3)  # one SUBACK only


@pytest.mark.mqtt("MQTT-3.8.4-3")
def test_a_repeated_filter_replaces_its_subscription_and_resends_retained(
        target: Target) -> None:
    topic = target.topic("again")
    target.client().publish(topic, b"retained", qos=1, retain=True)
    conn = target.client()
    conn.subscribe((topic, 1))
    assert conn.message().retain
    assert conn.subscribe((topic, 0)).return_codes == (0,)
    resent = conn.message()
    assert (resent.payload, resent.retain, resent.qos) == (b"retained", True, 0)
    target.client().publish(topic, b"once", qos=1)
    got = conn.message()
    assert (got.payload, got.qos) == (b"once", 0)  # the new subscription's QoS
    conn.expect_none(0.3)  # and not a second copy


@pytest.mark.mqtt("MQTT-3.3.2-3")
def test_wildcards_match_as_section_4_7_says(target: Target) -> None:
    base = target.topic()
    conn = target.client()
    conn.subscribe((f"{base}/+/x", 1), (f"{base}/deep/#", 1))
    publisher = target.client()
    for topic in (f"{base}/a/x", f"{base}/a/b/x", f"{base}/a", f"{base}/deep",
                  f"{base}/deep/1/2", f"{base}//x"):
        publisher.publish(topic, topic.encode(), qos=1)
    got = [conn.message().topic for _ in range(4)]
    # '#' also matches its parent level; '+' matches an empty level.
    assert got == [f"{base}/a/x", f"{base}/deep", f"{base}/deep/1/2", f"{base}//x"]
    conn.expect_none(0.3)


@pytest.mark.mqtt("MQTT-4.7.3-4")
def test_topics_are_matched_without_normalisation(target: Target) -> None:
    """'é' as one code point (NFC) and as 'e' and a combining accent (NFD)
    are different topics, as are two cases of a letter."""
    base = target.topic()
    conn = target.client()
    conn.subscribe((f"{base}/caf\u00e9", 1))
    publisher = target.client()
    for level in ("cafe\u0301", "CAF\u00c9", "caf\u00e9"):
        publisher.publish(f"{base}/{level}", level.encode(), qos=1)
    assert conn.message().payload == "caf\u00e9".encode()
    conn.expect_none(0.3)


@pytest.mark.mqtt("MQTT-3.8.1-1")
def test_a_subscribe_with_wrong_flags_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x80, b"\x00\x01" + string(target.topic("x")) + b"\x01"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.8.3-3")
def test_a_subscribe_without_filters_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x82, b"\x00\x01"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.8.3-4")
@pytest.mark.parametrize("requested", [3, 0x05, 0x81], ids=["qos-3", "reserved-bit",
                                                            "high-bit"])
def test_a_requested_qos_byte_other_than_0_1_2_closes_the_connection(
        target: Target, requested: int) -> None:
    conn = target.client()
    conn.send(frame(0x82, b"\x00\x01" + string(target.topic("x")) + bytes((requested,))))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-2.3.1-1")
def test_a_subscribe_with_packet_id_0_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x82, b"\x00\x00" + string(target.topic("x")) + b"\x01"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.parametrize("topic_filter", [
    pytest.param("conformance/#/x", marks=pytest.mark.mqtt("MQTT-4.7.1-2"), id="hash-inside"),
    pytest.param("conformance/a#", marks=pytest.mark.mqtt("MQTT-4.7.1-2"), id="hash-in-level"),
    pytest.param("conformance/a+", marks=pytest.mark.mqtt("MQTT-4.7.1-3"), id="plus-in-level"),
])
@pytest.mark.mqtt("MQTT-4.8.0-1")
def test_an_invalid_topic_filter_closes_the_connection(target: Target,
                                                       topic_filter: str) -> None:
    conn = target.client()
    conn.send(Subscribe(1, ((topic_filter, 1),)))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.8.3-1", "MQTT-3.10.3-1", "MQTT-1.5.3-1")
@pytest.mark.parametrize("first", [0x82, 0xA2], ids=["subscribe", "unsubscribe"])
def test_a_topic_filter_that_is_not_utf_8_closes_the_connection(target: Target,
                                                                first: int) -> None:
    qos = b"\x01" if first == 0x82 else b""
    conn = target.client()
    conn.send(frame(first, b"\x00\x01" + string(b"conformance/\xed\xa0\x80") + qos))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-4.7.3-1")
def test_an_empty_topic_filter_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0x82, b"\x00\x01" + string("") + b"\x01"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.10.4-1", "MQTT-3.10.4-2", "MQTT-3.10.4-4")
def test_unsubscribe_compares_filters_character_by_character(target: Target) -> None:
    base = target.topic()
    conn = target.client()
    conn.subscribe((f"{base}/+", 1))
    publisher = target.client()
    assert conn.unsubscribe(f"{base}/x") == Unsuback(1 + 1)  # not the same filter
    publisher.publish(f"{base}/x", b"still", qos=1)
    assert conn.message().payload == b"still"
    conn.unsubscribe(f"{base}/+")
    publisher.publish(f"{base}/x", b"gone", qos=1)
    conn.expect_none(0.5)


@pytest.mark.mqtt("MQTT-3.10.4-5", "MQTT-3.10.4-4")
def test_unsuback_answers_even_when_nothing_was_subscribed(target: Target) -> None:
    conn = target.client()
    conn.send(Unsubscribe(0xCAFE, (target.topic("never"),)))
    assert conn.expect(Unsuback) == Unsuback(0xCAFE)


@pytest.mark.mqtt("MQTT-3.10.4-6")
def test_one_unsuback_answers_every_filter(target: Target) -> None:
    base = target.topic()
    conn = target.client()
    conn.subscribe((f"{base}/a", 1), (f"{base}/b", 1))
    conn.send(Unsubscribe(9, (f"{base}/a", f"{base}/b")))
    assert conn.expect(Unsuback) == Unsuback(9)
    publisher = target.client()
    publisher.publish(f"{base}/a", b"", qos=1)
    publisher.publish(f"{base}/b", b"", qos=1)
    conn.expect_none(0.5)


@pytest.mark.mqtt("MQTT-3.10.1-1")
def test_an_unsubscribe_with_wrong_flags_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0xA0, b"\x00\x01" + string(target.topic("x"))))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.10.3-2")
def test_an_unsubscribe_without_filters_closes_the_connection(target: Target) -> None:
    conn = target.client()
    conn.send(frame(0xA2, b"\x00\x01"))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-4.8.0-1")
@pytest.mark.parametrize("first", [0x82, 0xA2], ids=["subscribe", "unsubscribe"])
def test_a_filter_list_with_a_stray_byte_closes_the_connection(target: Target,
                                                              first: int) -> None:
    """A byte after the last whole filter: the frame holds half a field."""
    qos = b"\x01" if first == 0x82 else b""
    conn = target.client()
    conn.send(frame(first, b"\x00\x01" + string(target.topic("x")) + qos + b"\x00")
              + encode(Subscribe(2, ((target.topic("y"), 1),))))
    assert conn.closed_within(2)
    assert conn.pending == []
