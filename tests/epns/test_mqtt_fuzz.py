"""Property-based fuzzing of epns.mqtt (issue 15, item 8): arbitrary bytes
never raise anything but MalformedPacket and never yield a packet whose
re-encoding differs from the frame it came from; generated packets
round-trip. Bounded: a few hundred examples each, a few seconds in all."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epns.errors import MalformedPacket
from epns.mqtt import (
    Connect,
    Decoder,
    Packet,
    Puback,
    Publish,
    Role,
    Subscribe,
    Unsubscribe,
    Will,
    encode,
)

_FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CONNECT = encode(Connect("fuzz", 30))

# MQTT strings: no U+0000, no surrogates (which UTF-8 cannot carry).
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=40)
_topic = _text.filter(lambda t: t and "+" not in t and "#" not in t)
# Filters: levels that are literal, '+', or a last '#'.
_filter = st.lists(st.one_of(_topic.map(lambda t: t.replace("/", "")).filter(bool),
                             st.just("+")), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"])]))
_packet_id = st.integers(1, 65535)
_client_packets = st.one_of(
    st.builds(lambda topic, payload, qos, retain, pid: Publish(
        topic, payload, qos, retain, False, pid if qos else None),
        _topic, st.binary(max_size=200), st.integers(0, 2), st.booleans(), _packet_id),
    st.builds(Puback, _packet_id),
    st.builds(Subscribe, _packet_id, st.lists(
        st.tuples(_filter, st.integers(0, 2)), min_size=1, max_size=5).map(tuple)),
    st.builds(Unsubscribe, _packet_id,
              st.lists(_filter, min_size=1, max_size=5).map(tuple)),
)


@_FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_after_connect_decode_or_are_refused(data: bytes) -> None:
    decoder = Decoder(Role.SERVER, max_packet_size=4096)
    try:
        packets = decoder.packets(_CONNECT + data)
    except MalformedPacket:
        return
    # What decoded re-encodes to a prefix of the input: nothing was skipped.
    stream = b"".join(encode(packet) for packet in packets)
    assert (_CONNECT + data).startswith(stream)


@_FAST
@given(st.binary(max_size=300))
def test_arbitrary_first_bytes_never_escape_as_another_error(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        Decoder(Role.SERVER).packets(data)


@_FAST
@given(st.lists(_client_packets, max_size=8), st.integers(1, 64))
def test_generated_packets_round_trip_in_any_chunking(packets: list[Packet],
                                                      chunk: int) -> None:
    stream = _CONNECT + b"".join(encode(packet) for packet in packets)
    decoder = Decoder(Role.SERVER)
    found: list[Packet] = []
    for start in range(0, len(stream), chunk):
        found += decoder.packets(stream[start:start + chunk])
    assert found[1:] == packets


@_FAST
@given(_text, st.integers(0, 65535), st.booleans(), st.one_of(st.none(), st.builds(
    Will, _topic, st.binary(max_size=50), st.integers(0, 2), st.booleans())),
    st.one_of(st.none(), _text), st.binary(max_size=30))
def test_generated_connects_round_trip(client_id: str, keep_alive: int, clean: bool,
                                       will: Will | None, username: str | None,
                                       password: bytes) -> None:
    connect = Connect(client_id, keep_alive, clean, will, username,
                      password if username is not None else None)
    assert Decoder(Role.SERVER).packets(encode(connect)) == [connect]
