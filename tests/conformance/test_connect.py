"""MQTT 3.1.1 sections 3.1 (CONNECT) and 3.2 (CONNACK)."""

from __future__ import annotations

import threading
import time

import pytest

from epns.mqtt import Connack, Connect, Pingreq, Pingresp, Publish, Will, encode
from tests.conformance.wire import Conn, Target, connect_body, frame, string


def refused_without_connack(conn: Conn, seconds: float = 2.0) -> bool:
    """The broker closed the connection and accepted nothing (a CONNACK
    refusing it is allowed where the statement says SHOULD)."""
    closed = conn.closed_within(seconds)
    return closed and not any(isinstance(p, Connack) and p.return_code == 0
                              for p in conn.pending)


@pytest.mark.mqtt("MQTT-3.1.0-1")
def test_the_first_packet_must_be_connect(target: Target) -> None:
    conn = target.open(target.fresh_name())
    conn.send(Pingreq())
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.1.0-2")
def test_a_second_connect_is_a_protocol_violation(target: Target) -> None:
    name = target.fresh_name()
    conn = target.client(name)
    conn.send(Connect(name))
    assert conn.closed_within(2)
    assert conn.pending == []


@pytest.mark.mqtt("MQTT-3.1.2-1")
@pytest.mark.parametrize("protocol", [b"MQTX", b"mqtt", b"MQTT\x00"])
def test_another_protocol_name_is_not_processed_as_mqtt(target: Target, protocol: bytes) -> None:
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name, name=protocol)))
    assert refused_without_connack(conn)


@pytest.mark.mqtt("MQTT-3.1.2-2", "MQTT-3.2.2-4", "MQTT-3.2.2-5")
@pytest.mark.parametrize("level", [2, 6, 255])
def test_an_unsupported_protocol_level_gets_connack_1_and_the_connection_closed(
        target: Target, level: int) -> None:
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name, level=level)))
    # The strict decoder already refuses a session-present flag with a refusal.
    assert conn.expect(Connack) == Connack(1, session_present=False)
    assert conn.closed_within(2)


@pytest.mark.mqtt("MQTT-3.1.2-3")
def test_the_reserved_connect_flag_must_be_zero(target: Target) -> None:
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name, flags=0x03)))
    assert refused_without_connack(conn)


WILL_TAIL = string("conformance/will") + string(b"gone")


@pytest.mark.parametrize(("flags", "tail"), [
    pytest.param(0x02 | 0x08, b"", marks=pytest.mark.mqtt("MQTT-3.1.2-11", "MQTT-3.1.2-13"),
                 id="will-qos-without-will-flag"),
    pytest.param(0x02 | 0x20, b"", marks=pytest.mark.mqtt("MQTT-3.1.2-11", "MQTT-3.1.2-15"),
                 id="will-retain-without-will-flag"),
    pytest.param(0x02 | 0x04 | 0x18, WILL_TAIL, marks=pytest.mark.mqtt("MQTT-3.1.2-14"),
                 id="will-qos-3"),
    pytest.param(0x02 | 0x40, string(b"secret"), marks=pytest.mark.mqtt("MQTT-3.1.2-22"),
                 id="password-without-user-name"),
    pytest.param(0x02 | 0x04, b"", marks=pytest.mark.mqtt("MQTT-3.1.2-9"),
                 id="will-flag-without-will-fields"),
    pytest.param(0x02 | 0x80, b"", marks=pytest.mark.mqtt("MQTT-3.1.2-19"),
                 id="user-name-flag-without-user-name"),
    pytest.param(0x02 | 0x80 | 0x40, string("user"), marks=pytest.mark.mqtt("MQTT-3.1.2-21"),
                 id="password-flag-without-password"),
    pytest.param(0x02, string("user"), marks=pytest.mark.mqtt("MQTT-3.1.2-18"),
                 id="user-name-without-its-flag"),
    pytest.param(0x02 | 0x80, string("user") + string(b"pw"),
                 marks=pytest.mark.mqtt("MQTT-3.1.2-20"), id="password-without-its-flag"),
    pytest.param(0x02 | 0x04, string(b"conformance/\xff") + string(b"gone"),
                 marks=pytest.mark.mqtt("MQTT-3.1.3-10", "MQTT-1.5.3-1"),
                 id="will-topic-not-utf-8"),
    pytest.param(0x02 | 0x80, string(b"us\x00er"),
                 marks=pytest.mark.mqtt("MQTT-3.1.3-11", "MQTT-1.5.3-2"),
                 id="user-name-with-nul"),
])
def test_inconsistent_connect_flags_are_refused(target: Target, flags: int, tail: bytes) -> None:
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name, flags=flags, tail=tail)))
    assert refused_without_connack(conn)


@pytest.mark.mqtt("MQTT-3.1.2-8", "MQTT-3.1.2-16")
def test_the_will_is_published_when_the_connection_is_lost(target: Target) -> None:
    topic = target.topic("will")
    watcher = target.client()
    watcher.subscribe((topic, 1))
    mortal = target.client(will=Will(topic, b"gone", qos=1))
    mortal.close()  # no DISCONNECT: the network "failed"
    got = watcher.message()
    assert (got.topic, got.payload, got.retain) == (topic, b"gone", False)
    # Will retain 0: not retained for a later subscriber.
    late = target.client()
    late.subscribe((topic, 1))
    late.expect_none(0.5)


@pytest.mark.mqtt("MQTT-3.1.2-17")
def test_a_will_with_will_retain_is_published_retained(target: Target) -> None:
    topic = target.topic("will")
    mortal = target.client(will=Will(topic, b"gone", qos=1, retain=True))
    mortal.close()
    late = target.client()
    deadline = time.monotonic() + 5
    while True:  # the broker publishes the will when it notices the close
        late.subscribe((topic, 1))
        try:
            got = late.message(0.3)
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "the retained will never arrived"
    assert (got.topic, got.payload, got.retain) == (topic, b"gone", True)


@pytest.mark.mqtt("MQTT-3.1.2-10", "MQTT-3.14.4-3")
def test_disconnect_discards_the_will(target: Target) -> None:
    topic = target.topic("will")
    watcher = target.client()
    watcher.subscribe((topic, 1))
    polite = target.client(will=Will(topic, b"gone", qos=1))
    polite.disconnect()
    watcher.expect_none(1.0)


@pytest.mark.mqtt("MQTT-3.1.2-12")
def test_no_will_without_the_will_flag(target: Target) -> None:
    topic = target.topic("will")
    watcher = target.client()
    watcher.subscribe((topic, 1))
    target.client().close()
    watcher.expect_none(1.0)


@pytest.mark.mqtt("MQTT-3.1.2-24")
@pytest.mark.xfail_on("mosquitto", "2.0.11 looks for silent clients every 5 s or so: one with "
                      "keep-alive 1 s is closed after 5.5-6 s (keep-alive 2 or 3 s: 6 s)")
def test_a_silent_client_is_disconnected_after_one_and_a_half_keep_alives(
        target: Target) -> None:
    """Three silent clients 0.7 s apart: a broker that checks on a coarse
    tick can meet one of their windows by chance (Mosquitto once did, in CI),
    not all three."""
    topic = target.topic("will")
    watcher = target.client()
    watcher.subscribe((topic, 1))
    elapsed: list[float] = []

    def watch(silent: Conn, start: float) -> None:
        if silent.closed_within(3):
            elapsed.append(time.monotonic() - start)

    threads = []
    for number in range(3):
        silent = target.client(keep_alive=1, will=Will(topic, b"timed out %d" % number, qos=1))
        threads.append(threading.Thread(target=watch, args=(silent, time.monotonic())))
        threads[-1].start()
        time.sleep(0.7)
    for thread in threads:
        thread.join(timeout=5)
    # 1.5 s, and some slack for a loaded machine; not before one keep-alive.
    assert len(elapsed) == 3, elapsed
    assert all(1.0 <= took <= 2.5 for took in elapsed), elapsed
    # "As if the network had failed": the wills are published.
    wills = sorted(watcher.message().payload for _ in range(3))
    assert wills == [b"timed out 0", b"timed out 1", b"timed out 2"]


@pytest.mark.mqtt("MQTT-3.1.2-24", "MQTT-3.12.4-1")
def test_pings_keep_a_client_connected(target: Target) -> None:
    conn = target.client(keep_alive=1)
    for _ in range(5):
        time.sleep(0.5)
        conn.send(Pingreq())
        conn.expect(Pingresp)


@pytest.mark.mqtt("MQTT-3.1.3-3", "MQTT-3.1.3-5", "MQTT-3.1.4-4")
def test_a_client_id_of_23_letters_and_digits_is_allowed(target: Target) -> None:
    name = target.fresh_name("cid")
    name = name + "0" * (23 - len(name))
    _, connack = target.connect(name)
    assert connack == Connack(0, session_present=False)


@pytest.mark.mqtt("MQTT-3.1.3-4", "MQTT-1.5.3-1")
def test_a_client_id_that_is_not_utf_8_is_refused(target: Target) -> None:
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name)[:-len(name) - 2] + string(b"conformance-\xc3")))
    assert refused_without_connack(conn)


@pytest.mark.mqtt("MQTT-3.1.4-2")
def test_only_a_connect_that_is_accepted_closes_the_connected_client(target: Target) -> None:
    """The takeover is one of the steps after a successful validation: a
    CONNECT refused (here: another certificate, the same client id) leaves
    the connected client alone. (Mosquitto replaces the client id with the
    certificate's name, so there is no takeover to make.)"""
    name = target.fresh_name()
    first = target.client(name)
    intruder = target.open(target.fresh_name())
    intruder.send(Connect(name))
    connack = intruder.expect(Connack)
    if connack.return_code == 2:
        assert intruder.closed_within(2)
    first.send(Pingreq())
    first.expect(Pingresp)


@pytest.mark.mqtt("MQTT-3.1.3-7", "MQTT-3.1.3-8", "MQTT-3.2.2-4", "MQTT-3.2.2-5")
def test_an_empty_client_id_with_clean_session_0_gets_connack_2(target: Target) -> None:
    conn = target.open(target.fresh_name())
    conn.send(Connect("", clean_session=False))
    assert conn.expect(Connack) == Connack(2, session_present=False)
    assert conn.closed_within(2)


@pytest.mark.mqtt("MQTT-3.1.3-6", "MQTT-3.1.3-9")
@pytest.mark.parametrize("client_id", ["", "conformance-someone-else"])
def test_a_client_id_is_assigned_or_rejected_with_connack_2(target: Target,
                                                            client_id: str) -> None:
    """An empty client id MAY be allowed (the server assigns one); a client id
    the server rejects gets CONNACK 2 and the connection closed. (The epns
    broker rejects any client id that is not the proven identity; Mosquitto,
    configured with use_username_as_clientid, replaces it with that identity.)"""
    conn = target.open(target.fresh_name())
    conn.send(Connect(client_id))
    connack = conn.expect(Connack)
    assert connack.return_code in (0, 2)
    if connack.return_code == 2:
        assert conn.closed_within(2)
    else:
        conn.send(Pingreq())
        conn.expect(Pingresp)


@pytest.mark.mqtt("MQTT-3.2.0-1", "MQTT-3.1.4-4")
def test_the_first_packet_from_the_server_is_connack(target: Target) -> None:
    """A client may send packets right after CONNECT, before its CONNACK."""
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(encode(Connect(name)) + encode(Pingreq()))
    assert conn.expect(Connack).return_code == 0
    conn.expect(Pingresp)


@pytest.mark.mqtt("MQTT-3.1.4-5")
def test_nothing_after_a_refused_connect_is_processed(target: Target) -> None:
    name, topic = target.fresh_name(), target.topic("refused")
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name, level=6))
              + encode(Publish(topic, b"smuggled", 1, retain=True, packet_id=1)))
    assert conn.expect(Connack).return_code == 1
    assert conn.closed_within(2)
    assert conn.pending == []  # no PUBACK either
    reader = target.client()
    reader.subscribe((topic, 1))
    reader.expect_none(0.5)


@pytest.mark.mqtt("MQTT-3.1.4-1", "MQTT-4.8.0-1")
@pytest.mark.parametrize("extra", [b"\x00", b"\xc0\x00"], ids=["stray-byte", "a-pingreq"])
def test_a_connect_whose_frame_runs_past_its_fields_is_refused(target: Target,
                                                                extra: bytes) -> None:
    """Bytes left inside the CONNECT frame after its last field: a reader
    that trusted the fields, not the frame, would take them for a packet."""
    name = target.fresh_name()
    conn = target.open(name)
    conn.send(frame(0x10, connect_body(name) + extra))
    assert refused_without_connack(conn)


@pytest.mark.mqtt("MQTT-3.1.4-1", "MQTT-4.8.0-1")
def test_a_connect_whose_fields_run_past_its_frame_is_refused(target: Target) -> None:
    """The frame ends two bytes before the client id does; those two bytes
    follow the frame. A reader that trusts the fields, not the frame, reads the
    whole client id, which is the certificate's name, and accepts."""
    name = target.fresh_name() + "ab"
    body = connect_body(name)
    conn = target.open(name)
    conn.send(frame(0x10, body[:-2]) + body[-2:])
    assert refused_without_connack(conn)
