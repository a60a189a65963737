"""Keeping one agent awake per subnet: the election and the instructions
(``epns.keep_awake``), pure."""

from __future__ import annotations

import pytest

from epns.envelope import (
    Event,
    EventType,
    Interface,
    Presence,
    PresenceState,
    decode_event,
    decode_presence,
    encode_event,
    encode_presence,
)
from epns.errors import MalformedMessage
from epns.keep_awake import (
    Member,
    elect_keepers,
    instruction,
    lan_subnets,
    subnet_states,
    wanted_holds,
)

LAN = "192.0.2.0/24"
OTHER = "198.51.100.0/24"


def _member(agent_id: str, *subnets: str, online: bool = True, allowed: bool | None = True,
            failed: bool = False) -> Member:
    return Member(agent_id, online, allowed, frozenset(subnets or (LAN,)), failed)


def test_subnets_are_ipv4_lans_only() -> None:
    found = lan_subnets([
        Interface("192.0.2.7", 24, "aa:bb:cc:dd:ee:01"),
        Interface("198.51.100.9", 23),
        Interface("127.0.0.1", 8), Interface("169.254.3.4", 16),  # loopback, link-local
        Interface("2001:db8::7", 64), Interface("fe80::1", 64),   # IPv6: no broadcast
        Interface("203.0.113.5", 32), Interface("203.0.113.9", 31),  # no LAN
        Interface("198.18.0.1", 7),  # shorter than a LAN
        Interface("not an address", 24),
    ])
    assert found == {"192.0.2.0/24", "198.51.100.0/23"}


def test_the_first_eligible_by_id_is_elected_and_only_agents_that_allow_it() -> None:
    members = [_member("c"), _member("b"), _member("a", allowed=False),
               _member("0-old", allowed=None), _member("0-asleep", online=False)]
    assert elect_keepers(members, {}) == {LAN: "b"}
    assert elect_keepers(reversed(members), {}) == {LAN: "b"}  # order does not matter


def test_the_current_keeper_stays_while_it_is_eligible() -> None:
    members = [_member("a"), _member("b"), _member("c")]
    assert elect_keepers(members, {LAN: "c"}) == {LAN: "c"}
    # Gone offline, or no longer allowing it: the next one by id.
    offline = [_member("a", allowed=False), _member("b"), _member("c", online=False)]
    assert elect_keepers(offline, {LAN: "c"}) == {LAN: "b"}


def test_a_keeper_that_cannot_hold_gives_way_to_one_that_has_not_failed() -> None:
    members = [_member("a", failed=True), _member("b")]
    assert elect_keepers(members, {LAN: "a"}) == {LAN: "b"}
    assert elect_keepers(members, {}) == {LAN: "b"}
    # Nobody better: the failed keeper stays (it may still be awake).
    assert elect_keepers([_member("a", failed=True)], {LAN: "a"}) == {LAN: "a"}


def test_every_subnet_gets_its_own_keeper_and_one_agent_may_keep_several() -> None:
    members = [_member("a", LAN, OTHER), _member("b", OTHER), _member("z", "203.0.113.0/24",
                                                                       online=False)]
    keepers = elect_keepers(members, {OTHER: "b"})
    assert keepers == {LAN: "a", OTHER: "b", "203.0.113.0/24": None}
    assert wanted_holds(keepers) == {"a": (LAN,), "b": (OTHER,)}
    assert wanted_holds(elect_keepers(members, {})) == {"a": (LAN, OTHER)}
    states = subnet_states(members, keepers)
    assert [(s.subnet, s.agents, s.online, s.eligible, s.keeper) for s in states] == [
        (LAN, 1, 1, 1, "a"), (OTHER, 2, 2, 2, "b"), ("203.0.113.0/24", 1, 0, 0, None)]


def test_instructions_go_out_where_the_agents_word_differs_and_once_per_connection() -> None:
    # Never told, wanted: hold. Holding and wanted: nothing.
    assert instruction(want=True, holding=None, sent=None, sent_at=None,
                       online_since=10.0) is True
    assert instruction(want=True, holding=True, sent=True, sent_at=20.0,
                       online_since=10.0) is None
    # Told to hold on this connection and no answer yet, or "cannot": not again.
    assert instruction(want=True, holding=None, sent=True, sent_at=20.0,
                       online_since=10.0) is None
    assert instruction(want=True, holding=False, sent=True, sent_at=20.0,
                       online_since=10.0) is None
    # It reconnected since (a restarted agent holds nothing): again.
    assert instruction(want=True, holding=False, sent=True, sent_at=20.0,
                       online_since=30.0) is True
    # Holding but no longer wanted: release, once per connection.
    assert instruction(want=False, holding=True, sent=True, sent_at=20.0,
                       online_since=10.0) is False
    assert instruction(want=False, holding=True, sent=False, sent_at=40.0,
                       online_since=10.0) is None
    # Never held and not wanted: nothing to say.
    assert instruction(want=False, holding=None, sent=None, sent_at=None,
                       online_since=10.0) is None


def test_presence_and_events_carry_keep_awake() -> None:
    born = Presence(PresenceState.ONLINE, at=1.0, keep_awake=False)
    assert decode_presence(encode_presence(born)).keep_awake is False
    # An agent older than keep-awake says nothing: None, and no key on the wire.
    old = encode_presence(Presence(PresenceState.ONLINE, at=1.0))
    assert b"keep_awake" not in old
    assert decode_presence(old).keep_awake is None
    with pytest.raises(MalformedMessage, match=r"presence\.keep_awake"):
        decode_presence(old.replace(b'"at"', b'"keep_awake":"yes","at"'))
    report = Event(EventType.KEEP_AWAKE, 2.0, "c1", {"holding": False, "detail": "no bus"})
    assert decode_event(encode_event(report)).body == {"holding": False, "detail": "no bus"}
