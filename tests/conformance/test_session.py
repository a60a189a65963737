"""MQTT 3.1.1 sessions: CleanSession (3.1.2.4), Session Present (3.2.2.2),
a client id connected twice (3.1.4), redelivery on reconnect (4.4)."""

from __future__ import annotations

import pytest

from epns.mqtt import Connack, Publish
from tests.conformance.wire import Target


@pytest.mark.mqtt("MQTT-3.2.2-3")
def test_no_stored_session_means_session_present_0(target: Target) -> None:
    _, connack = target.connect(clean=False)
    assert connack == Connack(0, session_present=False)


@pytest.mark.mqtt("MQTT-3.1.2-4", "MQTT-3.2.2-2", "MQTT-3.1.2-5", "MQTT-4.5.0-1")
def test_a_stored_session_is_resumed_with_its_subscriptions_and_messages(
        target: Target) -> None:
    name, topic = target.fresh_name(), target.topic("stored")
    first = target.client(name, clean=False)
    first.subscribe((topic, 1))
    first.disconnect()
    publisher = target.client()
    publisher.publish(topic, b"while away", qos=1)
    again, connack = target.connect(name, clean=False)
    assert connack == Connack(0, session_present=True)
    got = again.message()
    assert (got.topic, got.payload, got.qos) == (topic, b"while away", 1)
    publisher.publish(topic, b"now", qos=1)
    assert again.message().payload == b"now"


@pytest.mark.mqtt("MQTT-3.1.2-6", "MQTT-3.2.2-1", "MQTT-3.1.4-3")
def test_clean_session_discards_the_stored_session(target: Target) -> None:
    name, topic = target.fresh_name(), target.topic("discarded")
    first = target.client(name, clean=False)
    first.subscribe((topic, 1))
    first.disconnect()
    clean, connack = target.connect(name, clean=True)
    assert connack == Connack(0, session_present=False)
    publisher = target.client()
    publisher.publish(topic, b"nobody listens", qos=1)
    clean.expect_none(0.5)
    clean.disconnect()
    # The clean session was not kept either.
    again, connack = target.connect(name, clean=False)
    assert connack == Connack(0, session_present=False)
    again.expect_none(0.3)


@pytest.mark.mqtt("MQTT-3.1.2-7")
def test_retained_messages_outlive_the_session_that_published_them(target: Target) -> None:
    topic = target.topic("kept")
    publisher = target.client()
    publisher.publish(topic, b"still here", qos=1, retain=True)
    publisher.disconnect()
    reader = target.client()
    reader.subscribe((topic, 1))
    got = reader.message()
    assert (got.payload, got.retain) == (b"still here", True)


@pytest.mark.mqtt("MQTT-3.1.4-2")
def test_a_second_connection_with_the_same_client_id_closes_the_first(target: Target) -> None:
    name = target.fresh_name()
    first = target.client(name)
    second = target.client(name)
    assert first.closed_within(3)
    second.publish(target.topic("alive"), b"", qos=1)


@pytest.mark.mqtt("MQTT-4.4.0-1", "MQTT-3.3.1-1")
def test_an_unacknowledged_message_is_sent_again_on_reconnect_with_dup(target: Target) -> None:
    name, topic = target.fresh_name(), target.topic("redelivered")
    subscriber = target.client(name, clean=False)
    subscriber.subscribe((topic, 1))
    publisher = target.client()
    publisher.publish(topic, b"ack me", qos=1)
    first = subscriber.message(ack=False)
    assert (first.qos, first.dup) == (1, False)
    subscriber.close()  # without the PUBACK
    again, connack = target.connect(name, clean=False)
    assert connack.session_present
    resent = again.expect(Publish)
    assert (resent.topic, resent.payload, resent.qos) == (topic, b"ack me", 1)
    assert resent.packet_id == first.packet_id
    assert resent.dup
