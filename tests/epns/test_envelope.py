"""epns.envelope: signed commands, replay protection, events and presence."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from epns import envelope
from epns.envelope import (
    TARGET_ALL,
    Command,
    CommandType,
    Event,
    EventType,
    Interface,
    Presence,
    PresenceState,
    ReplayGuard,
    check_fresh,
    check_target,
    decode_command,
    decode_event,
    decode_presence,
    encode_event,
    encode_presence,
    key_id,
    sign_command,
    target_agent,
    target_group,
    verify_command,
)
from epns.errors import (
    BadSignature,
    ExpiredMessage,
    MalformedMessage,
    MessageError,
    ReplayedMessage,
    UnknownSigner,
    WrongTarget,
)
from epns.tokens import b64encode

NOW = 1_700_000_000.0
SKEW = envelope.CLOCK_SKEW


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _command(target: str = "agent:agent-1", *, iat: float = NOW, exp: float = NOW + 300,
             cid: str | None = None, body: dict[str, object] | None = None) -> Command:
    extra = {} if cid is None else {"id": cid}
    return Command(CommandType.WAKE, target, iat, exp, body or {}, **extra)


def _resign(key: Ed25519PrivateKey, fields: dict[str, object]) -> bytes:
    """Wire bytes of arbitrary fields, validly signed."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({**fields, "sig": b64encode(key.sign(canonical))}).encode()


# --- targets and fields -------------------------------------------------------------


def test_targets() -> None:
    assert target_agent("agent-1") == "agent:agent-1"
    assert target_group("floor-2") == "group:floor-2"
    assert TARGET_ALL == "all"


def test_command_ids_are_unique() -> None:
    assert len({_command().id for _ in range(50)}) == 50


def test_fields_are_the_wire_form() -> None:
    command = _command(cid="c1", body={"reason": "sync"})
    assert command.fields() == {
        "v": 1,
        "id": "c1",
        "type": "wake",
        "target": "agent:agent-1",
        "iat": NOW,
        "exp": NOW + 300,
        "body": {"reason": "sync"},
    }


# --- sign / decode ------------------------------------------------------------------


@pytest.mark.parametrize("command_type", list(CommandType))
def test_sign_decode_round_trip(key: Ed25519PrivateKey, command_type: CommandType) -> None:
    command = Command(command_type, "group:g", NOW, NOW + 10.5,
                      {"mac": "aa:bb", "n": 3, "nested": {"ü": [1, 2]}})
    raw = sign_command(command, key)
    assert isinstance(raw, bytes)
    wire = json.loads(raw)
    assert set(wire) == {"v", "id", "type", "target", "iat", "exp", "body", "kid", "sig"}
    assert wire["kid"] == key_id(key.public_key())
    assert raw.isascii()
    assert decode_command(raw, key.public_key()) == command


def test_signature_does_not_depend_on_whitespace_or_key_order(key: Ed25519PrivateKey) -> None:
    command = _command()
    wire = json.loads(sign_command(command, key))
    reordered = json.dumps(dict(reversed(list(wire.items()))), indent=2).encode()
    assert decode_command(reordered, key.public_key()) == command


def test_wrong_key(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    raw = sign_command(_command(), other)
    expected = (f"signed by key {key_id(other.public_key())}, which is not the pinned key "
                f"{key_id(key.public_key())}")
    with pytest.raises(UnknownSigner, match=expected):
        decode_command(raw, key.public_key())


def test_wrong_key_claiming_the_pinned_id(key: Ed25519PrivateKey) -> None:
    # A forger names the pinned key's id: the signature itself still fails.
    wire = json.loads(sign_command(_command(), Ed25519PrivateKey.generate()))
    wire["kid"] = key_id(key.public_key())
    with pytest.raises(BadSignature, match="does not verify against server key"):
        decode_command(json.dumps(wire).encode(), key.public_key())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target", "agent:agent-2"),
        ("target", "all"),
        ("exp", NOW + 10_000),
        ("iat", NOW - 1),
        ("type", "config"),
        ("id", "other-id"),
        ("body", {"evil": True}),
    ],
)
def test_tampered_field(key: Ed25519PrivateKey, field: str, value: object) -> None:
    wire = json.loads(sign_command(_command(), key))
    wire[field] = value
    with pytest.raises(BadSignature):
        decode_command(json.dumps(wire).encode(), key.public_key())


def test_added_field_breaks_signature(key: Ed25519PrivateKey) -> None:
    wire = json.loads(sign_command(_command(), key))
    wire["extra"] = 1
    with pytest.raises(BadSignature):
        decode_command(json.dumps(wire).encode(), key.public_key())


@pytest.mark.parametrize("sig", [None, 123, "", "!!!!", b64encode(b"x" * 64)])
def test_missing_or_bad_signature(key: Ed25519PrivateKey, sig: object) -> None:
    wire = json.loads(sign_command(_command(), key))
    if sig is None:
        del wire["sig"]
    else:
        wire["sig"] = sig
    with pytest.raises(BadSignature):
        decode_command(json.dumps(wire).encode(), key.public_key())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe\xfa",
        b"[]",
        b"42",
        b'"text"',
        b"null",
        b"{}",
        b'{"v": 2, "sig": "x"}',
        b'{"v": "1"}',
    ],
)
def test_malformed_command(key: Ed25519PrivateKey, raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_command(raw, key.public_key())


def test_oversized_command(key: Ed25519PrivateKey) -> None:
    command = _command(body={"pad": "x" * envelope.MAX_MESSAGE_BYTES})
    raw = sign_command(command, key)
    assert len(raw) > envelope.MAX_MESSAGE_BYTES
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode_command(raw, key.public_key())


def test_size_limit_boundary(key: Ed25519PrivateKey) -> None:
    # a payload of exactly MAX_MESSAGE_BYTES is accepted, one byte more is not
    base = sign_command(_command(cid="c", body={"pad": ""}), key)
    pad = "x" * (envelope.MAX_MESSAGE_BYTES - len(base))
    raw = sign_command(_command(cid="c", body={"pad": pad}), key)
    assert len(raw) == envelope.MAX_MESSAGE_BYTES
    assert decode_command(raw, key.public_key()).body == {"pad": pad}
    with pytest.raises(MalformedMessage):
        decode_command(raw + b" ", key.public_key())


@pytest.mark.parametrize(
    "fields",
    [
        {"v": 1, "id": "c", "type": "explode", "target": "all", "iat": NOW, "exp": NOW,
         "body": {}},
        {"v": 1, "id": "c", "type": "wake", "target": "all", "iat": "soon", "exp": NOW,
         "body": {}},
        {"v": 1, "id": "c", "type": "wake", "target": "all", "iat": NOW, "exp": None,
         "body": {}},
        {"v": 1, "id": "c", "type": "wake", "target": "all", "iat": NOW, "exp": NOW,
         "body": 5},
        {"v": 1, "id": "c", "type": "wake", "target": "all", "iat": NOW, "exp": NOW},
        {"v": 1, "type": "wake", "target": "all", "iat": NOW, "exp": NOW, "body": {}},
    ],
    ids=["type", "iat", "exp", "body", "no-body", "no-id"],
)
def test_signed_but_malformed_command(key: Ed25519PrivateKey, fields: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage, match="lacks a valid field"):
        decode_command(_resign(key, fields), key.public_key())


def test_message_errors_share_a_base() -> None:
    for cls in (MalformedMessage, BadSignature, ExpiredMessage, ReplayedMessage, WrongTarget):
        assert issubclass(cls, MessageError)


# --- freshness ----------------------------------------------------------------------


def test_fresh_within_window_and_skew() -> None:
    command = _command(iat=NOW, exp=NOW + 300)
    for now in (NOW - SKEW, NOW, NOW + 300, NOW + 300 + SKEW):
        check_fresh(command, now=now)


def test_expired() -> None:
    command = _command(iat=NOW, exp=NOW + 300)
    with pytest.raises(ExpiredMessage, match="expired"):
        check_fresh(command, now=NOW + 300 + SKEW + 0.001)


def test_issued_in_the_future() -> None:
    command = _command(iat=NOW, exp=NOW + 300)
    with pytest.raises(ExpiredMessage, match="in the future"):
        check_fresh(command, now=NOW - SKEW - 0.001)


def test_custom_skew() -> None:
    command = _command(iat=NOW, exp=NOW + 10)
    check_fresh(command, now=NOW + 15, skew=5)
    with pytest.raises(ExpiredMessage):
        check_fresh(command, now=NOW + 16, skew=5)
    with pytest.raises(ExpiredMessage):
        check_fresh(command, now=NOW - 1, skew=0)


# --- targets ------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["agent:agent-1", "all", "group:g1", "group:g2"])
def test_target_accepted(target: str) -> None:
    check_target(_command(target), "agent-1", frozenset({"g1", "g2"}))


@pytest.mark.parametrize(
    "target",
    ["agent:agent-2", "agent:agent-10", "agent:", "group:g3", "group:", "g1", "agent-1",
     "ALL", "all:", "agent:agent-1 ", "agent:AGENT-1"],
)
def test_wrong_target(target: str) -> None:
    with pytest.raises(WrongTarget, match="not for 'agent-1'"):
        check_target(_command(target), "agent-1", frozenset({"g1", "g2"}))


def test_group_target_without_groups() -> None:
    with pytest.raises(WrongTarget):
        check_target(_command("group:g1"), "agent-1", frozenset())


# --- replay guard -------------------------------------------------------------------


def test_replay_guard_refuses_a_seen_id() -> None:
    guard = ReplayGuard()
    command = _command(cid="c1")
    guard.accept(command, now=NOW)
    assert len(guard) == 1
    with pytest.raises(ReplayedMessage, match="c1"):
        guard.accept(command, now=NOW + 1)
    # the same id with other content is a replay too
    with pytest.raises(ReplayedMessage):
        guard.accept(_command("all", cid="c1"), now=NOW + 1)
    assert len(guard) == 1
    guard.accept(_command(cid="c2"), now=NOW)
    assert len(guard) == 2


def test_replay_guard_keeps_ids_until_full() -> None:
    guard = ReplayGuard(capacity=3)
    for cid in ("a", "b", "c"):
        guard.accept(_command(cid=cid, exp=NOW - 10_000), now=NOW)
    # expired ids are only forgotten when room is needed
    assert len(guard) == 3
    with pytest.raises(ReplayedMessage):
        guard.accept(_command(cid="a"), now=NOW)


def test_replay_guard_forgets_expired_ids_when_full() -> None:
    guard = ReplayGuard(capacity=3, skew=SKEW)
    guard.accept(_command(cid="old-1", exp=NOW + 10), now=NOW)
    guard.accept(_command(cid="old-2", exp=NOW + 20), now=NOW)
    guard.accept(_command(cid="live", exp=NOW + 1000), now=NOW)
    later = NOW + 20 + SKEW + 1  # both "old" commands could no longer pass check_fresh
    guard.accept(_command(cid="new", exp=later + 300), now=later)
    assert len(guard) == 2
    # forgotten ids are accepted again (check_fresh would refuse them anyway) ...
    guard.accept(_command(cid="old-1", exp=NOW + 10), now=later)
    # ... and remembered ids are still refused
    for cid in ("live", "new"):
        with pytest.raises(ReplayedMessage):
            guard.accept(_command(cid=cid), now=later)


def test_replay_guard_keeps_ids_still_within_skew() -> None:
    guard = ReplayGuard(capacity=3, skew=SKEW)
    guard.accept(_command(cid="a1", exp=NOW), now=NOW)
    guard.accept(_command(cid="a2", exp=NOW + 1), now=NOW)
    guard.accept(_command(cid="b", exp=NOW + 1000), now=NOW)
    # a1 and a2 are expired, but within the skew they could still pass
    # check_fresh, so they are not forgotten: only the one expiring first (a1)
    # is dropped to make room
    guard.accept(_command(cid="c", exp=NOW + 2000), now=NOW + SKEW)
    assert len(guard) == 3
    for cid in ("a2", "b", "c"):
        with pytest.raises(ReplayedMessage):
            guard.accept(_command(cid=cid), now=NOW + SKEW)


def test_replay_guard_full_of_live_ids_drops_the_one_expiring_first() -> None:
    guard = ReplayGuard(capacity=3)
    guard.accept(_command(cid="late", exp=NOW + 3000), now=NOW)
    guard.accept(_command(cid="soon", exp=NOW + 100), now=NOW)
    guard.accept(_command(cid="mid", exp=NOW + 2000), now=NOW)
    guard.accept(_command(cid="new", exp=NOW + 4000), now=NOW)
    assert len(guard) == 3
    guard.accept(_command(cid="soon", exp=NOW + 100), now=NOW)  # was dropped
    # now "mid" expires first among the rest and was dropped for "soon"
    for cid in ("late", "new", "soon"):
        with pytest.raises(ReplayedMessage):
            guard.accept(_command(cid=cid), now=NOW)


def test_replay_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(capacity=100)
    for n in range(1000):
        guard.accept(_command(cid=f"c{n}", exp=NOW + n), now=NOW)
        assert len(guard) <= 100
    assert len(guard) == 100


# --- verify_command -----------------------------------------------------------------


def test_verify_command_accepts_once(key: Ed25519PrivateKey) -> None:
    guard = ReplayGuard()
    command = _command("group:g1")
    raw = sign_command(command, key)
    accepted = verify_command(raw, key.public_key(), agent_id="agent-1",
                              groups=frozenset({"g1"}), replay=guard, now=NOW + 1)
    assert accepted == command
    with pytest.raises(ReplayedMessage):
        verify_command(raw, key.public_key(), agent_id="agent-1",
                       groups=frozenset({"g1"}), replay=guard, now=NOW + 2)


@pytest.mark.parametrize(
    ("command", "now", "error"),
    [
        (_command("agent:agent-2"), NOW, WrongTarget),
        (_command(exp=NOW + 1), NOW + 1 + SKEW + 1, ExpiredMessage),
        (_command(iat=NOW + SKEW + 100, exp=NOW + 1000), NOW, ExpiredMessage),
    ],
    ids=["wrong-target", "expired", "future"],
)
def test_verify_command_refusals_are_not_remembered(
    key: Ed25519PrivateKey, command: Command, now: float, error: type[Exception]
) -> None:
    guard = ReplayGuard()
    with pytest.raises(error):
        verify_command(sign_command(command, key), key.public_key(), agent_id="agent-1",
                       groups=frozenset(), replay=guard, now=now)
    assert len(guard) == 0


def test_verify_command_bad_signature(key: Ed25519PrivateKey) -> None:
    guard = ReplayGuard()
    wire = json.loads(sign_command(_command(), key))
    wire["body"] = {"x": 1}
    with pytest.raises(BadSignature):
        verify_command(json.dumps(wire).encode(), key.public_key(), agent_id="agent-1",
                       groups=frozenset(), replay=guard, now=NOW)
    assert len(guard) == 0


# --- events -------------------------------------------------------------------------


# Each event type's body as the agent writes it, and as the server keeps it.
BODIES: dict[EventType, dict[str, object]] = {
    EventType.ACK: {"type": "wake"},
    EventType.REJECT: {"reason": "expired 70s ago"},
    EventType.SYNC: {"ok": True, "detail": "200", "reason": "wake", "started_at": NOW,
                     "sync_id": "s1", "wakes": ["c1", "c2"]},
    EventType.WOL_RESULT: {"ok": True, "targets": [
        {"mac": "aa:bb:cc:dd:ee:ff", "packets": 6, "sent": ["127.0.0.1:9"], "errors": []}]},
    EventType.PONG: {},
    EventType.KEEP_AWAKE: {"holding": False, "detail": "cannot hold sleep off"},
}


@pytest.mark.parametrize("event_type", list(EventType))
def test_event_round_trip(event_type: EventType) -> None:
    event = Event(event_type, NOW + 0.25, ref="c1", body=BODIES[event_type])
    raw = encode_event(event)
    assert json.loads(raw)["v"] == 1
    assert decode_event(raw) == event


def test_an_event_body_keeps_only_the_fields_of_its_type() -> None:
    raw = encode_event(Event(EventType.ACK, NOW, "c1", {"type": "wake", "extra": [1] * 50}))
    assert decode_event(raw).body == {"type": "wake"}


def test_control_characters_in_a_detail_are_written_out_not_fatal() -> None:
    body = {**BODIES[EventType.SYNC], "detail": "exit 1: \x1b[31mfailed\x1b[0m\r\n\x00"}
    decoded = decode_event(encode_event(Event(EventType.SYNC, NOW, None, body)))
    assert decoded.body["detail"] == "exit 1: \\x1b[31mfailed\\x1b[0m\r\n\\x00"


def test_a_long_detail_is_cut_and_a_long_name_refused() -> None:
    body = {**BODIES[EventType.SYNC], "detail": "x" * 5000}
    decoded = decode_event(encode_event(Event(EventType.SYNC, NOW, None, body)))
    assert decoded.body["detail"] == "x" * envelope.MAX_DETAIL
    with pytest.raises(MalformedMessage, match=r"event\.body\.reason: longer than 32"):
        decode_event(encode_event(Event(EventType.SYNC, NOW, None,
                                        {**BODIES[EventType.SYNC], "reason": "r" * 33})))


def test_event_without_ref_or_body() -> None:
    event = Event(EventType.PONG, NOW)
    assert decode_event(encode_event(event)) == event
    assert decode_event(b'{"v":1,"type":"pong","at":5}') == Event(EventType.PONG, 5.0)
    assert decode_event(b'{"v":1,"type":"ack","at":5,"ref":"7","body":null}').ref == "7"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"nope",
        b"[1]",
        b'{"type":"ack","at":1}',
        b'{"v":2,"type":"ack","at":1}',
        b'{"v":1,"type":"boom","at":1}',
        b'{"v":1,"at":1}',
        b'{"v":1,"type":"ack"}',
        b'{"v":1,"type":"ack","at":"later"}',
        b'{"v":1,"type":"ack","at":null}',
        b'{"v":1,"type":"ack","at":1,"body":5}',
        b'{"v":1,"type":"ack","at":1,"body":"text"}',
        # What one hostile agent sent to stop the fleet's link, and its kin.
        b'{"v":1,"type":"ack","at":1,"ref":7}',
        b'{"v":1,"type":"ack","at":1,"ref":"a\\nb"}',
        b'{"v":1,"type":"ack","at":1,"ref":{"x":1}}',
        b'{"v":1,"type":"ack","at":NaN}',
        b'{"v":1,"type":"ack","at":Infinity}',
        b'{"v":1,"type":"ack","at":1e999}',
        b'{"v":1,"type":"ack","at":true}',
        b'{"v":1,"type":"ack","at":-1}',
        b'{"v":1,"type":"ack","at":99999999999999}',
        b'{"v":1,"type":"ack","at":1,"body":{"type":{"a":1}}}',
        b'{"v":1,"type":"sync","at":1,"body":{"ok":"yes"}}',
        b'{"v":1,"type":"sync","at":1,"body":{"ok":true,"wakes":"c1"}}',
        b'{"v":1,"type":"sync","at":1,"body":{"ok":true,"wakes":[1]}}',
        b'{"v":1,"type":"sync","at":1,"body":{"ok":true,"started_at":"now"}}',
        b'{"v":1,"type":"wol_result","at":1,"body":{"ok":true,"targets":[{"mac":5}]}}',
        b'{"v":1,"type":"wol_result","at":1,"body":{"ok":1}}',
        b'{"v":1,"type":"reject","at":1,"body":{"reason":["x"]}}',
        b"[" * 10000 + b"]" * 10000,
        b'{"v":1,"type":"ack","at":1,"body":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
        b'{"v":1,"type":"ack","at":1,"ref":"\xff\xfe"}',
    ],
)
def test_malformed_event(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_event(raw)


def test_oversized_event() -> None:
    raw = encode_event(Event(EventType.SYNC, NOW, body={"pad": "x" * envelope.MAX_MESSAGE_BYTES}))
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode_event(raw)


# --- presence -----------------------------------------------------------------------


def test_presence_round_trip() -> None:
    presence = Presence(
        PresenceState.ONLINE,
        NOW,
        route="primary",
        version="0.1.0",
        hostname="laptop-1",
        interfaces=(
            Interface("127.0.0.10", 24, "aa:bb:cc:dd:ee:ff"),
            Interface("fe80::1", 64),
        ),
    )
    raw = encode_presence(presence)
    assert json.loads(raw)["interfaces"][1] == {"address": "fe80::1", "prefix": 64, "mac": None}
    decoded = decode_presence(raw)
    assert decoded == presence
    assert isinstance(decoded.interfaces, tuple)


def test_minimal_presence() -> None:
    will = Presence(PresenceState.OFFLINE, NOW)
    assert decode_presence(encode_presence(will)) == will
    assert decode_presence(b'{"v":1,"state":"offline","at":1}') == Presence(
        PresenceState.OFFLINE, 1.0
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{]",
        b'"online"',
        b'{"state":"online","at":1}',
        b'{"v":1,"state":"away","at":1}',
        b'{"v":1,"at":1}',
        b'{"v":1,"state":"online"}',
        b'{"v":1,"state":"online","at":"x"}',
        b'{"v":1,"state":"online","at":1,"interfaces":[{"prefix":24}]}',
        b'{"v":1,"state":"online","at":1,"interfaces":[{"address":"a","prefix":"x"}]}',
        b'{"v":1,"state":"online","at":1,"interfaces":[["a",24]]}',
        b'{"v":1,"state":"online","at":1,"interfaces":["a"]}',
        b'{"v":1,"state":"online","at":1,"interfaces":5}',
        # The retained birth that cut the server off the broker, and its kin.
        b'{"v":1,"state":"online","at":1,"route":["x"]}',
        b'{"v":1,"state":"online","at":1,"hostname":{"a":1}}',
        b'{"v":1,"state":"online","at":1,"version":2}',
        b'{"v":1,"state":"online","at":1,"hostname":"pc\\n2026-01-01 INFO forged"}',
        b'{"v":1,"state":"online","at":1,"hostname":"' + b"h" * 256 + b'"}',
        b'{"v":1,"state":"online","at":NaN}',
        b'{"v":1,"state":"online","at":1e400}',
        b'{"v":1,"state":["online"],"at":1}',
        b'{"v":1,"state":"online","at":1,"interfaces":[{"address":"127.0.0.1","prefix":33}]}',
        b'{"v":1,"state":"online","at":1,"interfaces":[{"address":"127.0.0.1","prefix":true}]}',
        b'{"v":1,"state":"online","at":1,"interfaces":[{"address":"127.0.0.1","prefix":8,'
        b'"mac":{"a":1}}]}',
        b'{"v":1,"state":"online","at":1,"interfaces":[' + b'{"address":"::1","prefix":1},' * 512
        + b'{"address":"::1","prefix":1}]}',
    ],
)
def test_malformed_presence(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_presence(raw)


def test_a_link_layer_address_that_is_no_mac_is_left_out() -> None:
    raw = (b'{"v":1,"state":"online","at":1,"interfaces":[{"address":"127.0.0.2","prefix":8,'
           b'"mac":"80:00:02:08:fe:80:00:00:00:00:00:00:00:11:75:01:01:62:a1:b2"}]}')
    assert decode_presence(raw).interfaces == (Interface("127.0.0.2", 8, None),)


def test_oversized_presence() -> None:
    many = tuple(Interface(f"10.0.{n // 256}.{n % 256}", 24) for n in range(1000))
    raw = encode_presence(Presence(PresenceState.ONLINE, NOW, interfaces=many))
    assert len(raw) > envelope.MAX_MESSAGE_BYTES
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode_presence(raw)
