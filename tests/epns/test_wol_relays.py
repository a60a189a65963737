"""epns.wol_relays: relay election and the relay's command body, pure.

Nothing is sent here. The addresses are documentation ranges (RFC 5737) and
loopback: they only exercise the subnet arithmetic.
"""

from __future__ import annotations

import ipaddress

import pytest

from epns.agent_config import WolSettings
from epns.envelope import Interface
from epns.errors import MalformedMessage
from epns.wol import parse_wol_body
from epns.wol_relays import (
    Candidate,
    WakePath,
    elect_relays,
    path_from_interfaces,
    relay_body,
    relay_warning,
    relays_in,
    wake_path,
)

MAC = "aa:bb:cc:dd:ee:01"
SUBNET = ipaddress.IPv4Network("192.0.2.0/24")


def _candidate(agent_id: str, last_seen: float, *addresses: str) -> Candidate:
    return Candidate(agent_id, last_seen, addresses)


def test_relays_are_the_candidates_in_the_subnet_most_recently_seen_first() -> None:
    candidates = [
        _candidate("old", 10.0, "192.0.2.7"),
        _candidate("elsewhere", 99.0, "198.51.100.7"),
        _candidate("new", 50.0, "127.0.0.1", "192.0.2.9"),
        _candidate("v6", 98.0, "2001:db8::1"),
        _candidate("odd", 97.0, "not an address"),
    ]
    assert relays_in(SUBNET, candidates) == ["new", "old"]


def test_the_target_is_never_its_own_relay_and_the_limit_holds() -> None:
    candidates = [_candidate(f"a{i}", float(i), f"192.0.2.{10 + i}") for i in range(5)]
    path = wake_path(MAC, "192.0.2.23", 24)
    assert elect_relays(path, candidates, 2, exclude="a4") == ["a3", "a2"]
    assert elect_relays(path, candidates, 20) == ["a4", "a3", "a2", "a1", "a0"]


def test_no_relay_is_elected_without_a_known_subnet() -> None:
    candidates = [_candidate("a", 1.0, "192.0.2.10")]
    assert elect_relays(WakePath(MAC), candidates, 3) == []


def test_a_loopback_target_is_matched_like_any_subnet() -> None:
    # Only an address the admin names can be loopback; the tests rely on it.
    path = wake_path(MAC, "127.0.0.1", 8)
    assert path.subnet == ipaddress.IPv4Network("127.0.0.0/8")
    assert relays_in(path.subnet, [_candidate("r", 1.0, "127.0.0.1")]) == ["r"]


def test_relays_send_to_the_subnet_broadcast_then_the_last_address() -> None:
    assert wake_path(MAC, "192.0.2.23", 24).destinations() == ("192.0.2.255", "192.0.2.23")
    assert wake_path(MAC, "192.0.2.23", 32).destinations() == ("192.0.2.23",)
    assert WakePath(MAC).destinations() == ()


def test_wake_path_normalises_and_refuses_with_a_reason() -> None:
    assert wake_path("AA-BB-CC-DD-EE-01", None, None) == WakePath(MAC)
    assert wake_path(None, "192.0.2.23", 24).mac is None
    cases = {
        ("zz:bb:cc:dd:ee:01", None, None): "not a MAC address",
        (MAC, "192.0.2.23", None): "'address' and 'prefix' together",
        (MAC, None, 24): "'address' and 'prefix' together",
        (MAC, "192.0.2.300", 24): "not an IPv4 address",
        (MAC, "2001:db8::1", 64): "IPv6",
        (MAC, "224.0.0.1", 24): "not a machine's address",
        (MAC, "0.0.0.0", 24): "not a machine's address",
        (MAC, "192.0.2.23", 7): "prefix 7",
        (MAC, "192.0.2.23", 33): "prefix 33",
    }
    for (mac, address, prefix), reason in cases.items():
        with pytest.raises(MalformedMessage, match=reason):
            wake_path(mac, address, prefix)


def test_the_agents_lan_interface_names_its_path() -> None:
    interfaces = [
        Interface("127.0.0.1", 8, None),
        Interface("127.0.0.1", 8, "aa:bb:cc:dd:ee:09"),  # never loopback
        Interface("169.254.3.4", 16, "aa:bb:cc:dd:ee:08"),  # nor link-local
        Interface("fe80::1", 64, "aa:bb:cc:dd:ee:07"),
        Interface("2001:db8::5", 64, "aa:bb:cc:dd:ee:06"),
        Interface("192.0.2.40", 99, "aa:bb:cc:dd:ee:05"),  # a bad prefix is skipped
        Interface("192.0.2.41", 24, None),  # no MAC: cannot be woken through it
        Interface("192.0.2.42", 24, "AA:BB:CC:DD:EE:01"),
    ]
    path = path_from_interfaces(interfaces)
    assert path == WakePath(MAC, "192.0.2.42", SUBNET)
    assert path_from_interfaces(interfaces[:2]) is None


def test_what_the_admin_names_wins_over_what_the_agent_reported() -> None:
    known = wake_path("aa:bb:cc:dd:ee:09", "192.0.2.42", 24)
    assert WakePath(MAC).overriding(known) == WakePath(MAC, "192.0.2.42", SUBNET)
    given = wake_path(None, "198.51.100.5", 24)
    assert given.overriding(known) == wake_path("aa:bb:cc:dd:ee:09", "198.51.100.5", 24)


def test_the_relay_body_is_what_an_agent_parses() -> None:
    body = relay_body(MAC, ["192.0.2.255", "192.0.2.23"], [7, 9], 3)
    plan = parse_wol_body(body, WolSettings())
    assert plan.repeat == 3
    assert [str(d) for d in plan.targets[0].destinations] == [
        "192.0.2.255:7", "192.0.2.255:9", "192.0.2.23:7", "192.0.2.23:9"]


def test_the_warning_says_what_goes_out_when_no_relay_is_online() -> None:
    assert relay_warning("192.0.2.0/24", 1, 0) is None
    lonely = relay_warning("192.0.2.0/24", 0, 2)
    assert lonely is not None
    assert "no relay agent is online in 192.0.2.0/24" in lonely
    assert "2 addresses on the settings page" in lonely
    assert "1 address on" in (relay_warning("192.0.2.0/24", 0, 1) or "")
    silent = relay_warning(None, 0, 0)
    assert silent is not None
    assert "address is not known" in silent
    assert "no packet goes out" in silent
