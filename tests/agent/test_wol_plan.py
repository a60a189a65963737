"""epns.wol: MAC addresses, magic packets, the wol command body and the result body.

Pure parsing only: nothing here is sent; the addresses are loopback ones.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import wakeonlan

from epns.agent_config import WolSettings
from epns.envelope import MAX_MESSAGE_BYTES, Event, EventType, decode_event, encode_event
from epns.errors import MalformedMessage
from epns.wol import (
    MAX_ADDRESSES,
    MAX_DESTINATIONS,
    MAX_PORTS,
    MAX_REPEAT,
    MAX_TARGETS,
    Destination,
    SendOutcome,
    WolPlan,
    WolTarget,
    magic_packet,
    parse_address,
    parse_mac,
    parse_wol_body,
    result_body,
)

DEFAULTS = WolSettings(ports=(7, 9), repeat=3)
MAC = "aa:bb:cc:dd:ee:0f"


def _body(*targets: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"targets": list(targets), **extra}


def _target(mac: str = MAC, *addresses: str) -> dict[str, Any]:
    return {"mac": mac, "addresses": list(addresses or ("127.0.2.250",))}


@pytest.mark.parametrize(
    "text",
    ["aa:bb:cc:dd:ee:0f", "AA:BB:CC:DD:EE:0F", "aa-bb-cc-dd-ee-0f", "aabb.ccdd.ee0f",
     "AABBCCDDEE0F"],
)
def test_parse_mac_normalises_every_accepted_form(text: str) -> None:
    assert parse_mac(text) == MAC


@pytest.mark.parametrize(
    "text",
    ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:0f:00", "aa:bb-cc:dd:ee:0f", "gg:bb:cc:dd:ee:0f",
     "a:b:c:d:e:f", "aabb.ccdd.ee0", "aabbccddee0f\n", " aabbccddee0f", "aa bb cc dd ee 0f",
     "aabb:ccdd:ee0f"],
)
def test_parse_mac_rejects_other_forms_with_the_text_in_the_message(text: str) -> None:
    with pytest.raises(MalformedMessage, match="is not a MAC address") as caught:
        parse_mac(text)
    assert repr(text) in str(caught.value)


def test_magic_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    packet = magic_packet("AA-BB-CC-DD-EE-0F")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x0F]) * 16


def test_magic_packet_matches_the_library_that_sends_it() -> None:
    assert magic_packet(MAC) == wakeonlan.create_magic_packet(MAC)


def test_magic_packet_refuses_a_bad_mac() -> None:
    with pytest.raises(MalformedMessage):
        magic_packet("aa:bb:cc")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.2.23", "127.0.2.23"), ("0:0:0:0:0:0:0:1", "::1"),
     ("::1%lo", "::1%lo")],
)
def test_parse_address_canonicalises(text: str, expected: str) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [("127.0.2.300", "not an IPv4 or IPv6 address"),
     ("relay.example.com", "not an IPv4 or IPv6 address"),
     (" 127.0.2.23", "not an IPv4 or IPv6 address"),
     ("127.0.2.0/24", "not an IPv4 or IPv6 address"),
     ("0.0.0.0", "unspecified"), ("::", "unspecified")],
)
def test_parse_address_rejects(text: str, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_address(text)


def test_body_with_every_field() -> None:
    body = _body(_target("AABBCCDDEE0F", "127.0.2.250", "::1"), ports=[9], repeat=2)
    assert parse_wol_body(body, DEFAULTS) == WolPlan(
        (WolTarget(MAC, (Destination("127.0.2.250", 9), Destination("::1", 9))),),
        repeat=2,
    )


@pytest.mark.parametrize("extra", [{}, {"ports": None, "repeat": None}])
def test_ports_and_repeat_default_to_the_agent_settings(extra: dict[str, Any]) -> None:
    plan = parse_wol_body(_body(_target(), **extra), WolSettings(ports=(7, 9, 4000), repeat=5))
    assert plan.repeat == 5
    assert [d.port for d in plan.targets[0].destinations] == [7, 9, 4000]


def test_the_same_address_twice_is_sent_to_once() -> None:
    plan = parse_wol_body(_body(_target(MAC, "127.0.2.23", "127.0.2.23")), DEFAULTS)
    assert [str(d) for d in plan.targets[0].destinations] == ["127.0.2.23:7", "127.0.2.23:9"]


def test_a_bad_mac_is_an_error_of_its_target_only() -> None:
    plan = parse_wol_body(_body(_target("not-a-mac"), _target()), DEFAULTS)
    bad, good = plan.targets
    assert bad.mac == "not-a-mac"
    assert bad.destinations == ()
    assert len(bad.errors) == 1
    assert "'not-a-mac' is not a MAC address" in bad.errors[0]
    assert good == WolTarget(MAC, (Destination("127.0.2.250", 7), Destination("127.0.2.250", 9)))


def test_a_bad_address_is_an_error_and_the_others_are_kept() -> None:
    plan = parse_wol_body(_body(_target(MAC, "127.0.2.300", "127.0.2.23")), DEFAULTS)
    (target,) = plan.targets
    assert [str(d) for d in target.destinations] == ["127.0.2.23:7", "127.0.2.23:9"]
    assert target.errors == ("'127.0.2.300' is not an IPv4 or IPv6 address",)


def test_a_bad_mac_and_bad_address_are_both_reported() -> None:
    (target,) = parse_wol_body(_body(_target("xx", "nowhere")), DEFAULTS).targets
    assert target.destinations == ()
    assert len(target.errors) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "targets is not a list"),
        ({"targets": {"mac": MAC}}, "targets is not a list"),
        (_body(), "targets has 0 entries"),
        ({"targets": [MAC]}, "target is not an object"),
        (_body({"addresses": ["127.0.2.23"]}), "mac None is not a string"),
        (_body({"mac": 42, "addresses": ["127.0.2.23"]}), "mac 42 is not a string"),
        (_body({"mac": MAC}), "addresses is not a list"),
        (_body({"mac": MAC, "addresses": "127.0.2.23"}), "addresses is not a list"),
        (_body({"mac": MAC, "addresses": []}), "addresses has 0 entries"),
        (_body({"mac": MAC, "addresses": [3221225985]}), "address 3221225985 is not a string"),
        (_body(_target(), ports=9), "ports is not a list"),
        (_body(_target(), ports=[]), "ports has 0 entries"),
        (_body(_target(), ports=[0]), "port 0 is not an integer from 1 to 65535"),
        (_body(_target(), ports=[65536]), "port 65536 is not"),
        (_body(_target(), ports=["9"]), "port '9' is not"),
        (_body(_target(), ports=[True]), "port True is not"),
        (_body(_target(), repeat=0), "repeat 0 is not an integer from 1 to 10"),
        (_body(_target(), repeat=MAX_REPEAT + 1), "repeat 11 is not"),
        (_body(_target(), repeat=2.0), "repeat 2.0 is not"),
        (_body(_target(), repeat=True), "repeat True is not"),
    ],
)
def test_a_body_that_is_not_the_shape_is_refused(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_wol_body(body, DEFAULTS)


def _addresses(count: int) -> list[str]:
    return [f"127.0.2.{n}" for n in range(1, count + 1)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_body(*[_target()] * (MAX_TARGETS + 1)), f"targets has {MAX_TARGETS + 1} entries"),
        (_body(_target(MAC, *_addresses(MAX_ADDRESSES + 1))),
         f"addresses has {MAX_ADDRESSES + 1} entries"),
        (_body(_target(), ports=list(range(1, MAX_PORTS + 2))), f"ports has {MAX_PORTS + 1}"),
        (_body(*[_target(MAC, *_addresses(MAX_ADDRESSES))] * MAX_TARGETS, ports=[7, 9]),
         f"asks for {MAX_TARGETS * MAX_ADDRESSES * 2} destinations; at most {MAX_DESTINATIONS}"),
    ],
)
def test_a_body_over_the_bounds_is_refused(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_wol_body(body, DEFAULTS)


def test_a_body_at_the_bounds_is_accepted() -> None:
    per_target = MAX_DESTINATIONS // MAX_TARGETS
    body = _body(*[_target(MAC, *_addresses(per_target))] * MAX_TARGETS, ports=[9],
                 repeat=MAX_REPEAT)
    plan = parse_wol_body(body, DEFAULTS)
    assert sum(len(t.destinations) for t in plan.targets) == MAX_DESTINATIONS


def test_the_settings_ports_count_towards_the_bound() -> None:
    many_ports = WolSettings(ports=tuple(range(1, MAX_DESTINATIONS + 2)))
    with pytest.raises(MalformedMessage, match="destinations"):
        parse_wol_body(_body(_target()), many_ports)


V4 = Destination("127.0.2.23", 9)
V6 = Destination("::1", 7)


def test_destinations_read_as_address_and_port() -> None:
    assert (str(V4), str(V6)) == ("127.0.2.23:9", "[::1]:7")


def test_result_of_a_fully_delivered_plan() -> None:
    plan = WolPlan((WolTarget(MAC, (V4, V6)),), repeat=2)
    outcomes = [SendOutcome(0, V4), SendOutcome(0, V6)] * 2
    assert result_body(plan, outcomes) == {
        "ok": True,
        "targets": [{"mac": MAC, "packets": 4, "sent": ["127.0.2.23:9", "[::1]:7"],
                     "errors": []}],
    }


def test_result_reports_each_failing_destination_once_and_the_plan_errors() -> None:
    bad = WolTarget("xx", (), ("'xx' is not a MAC address",))
    plan = WolPlan((WolTarget(MAC, (V4, V6)), bad), repeat=2)
    outcomes = [SendOutcome(0, V4), SendOutcome(0, V6, "Network is unreachable"),
                SendOutcome(0, V4), SendOutcome(0, V6, "Network is unreachable")]
    assert result_body(plan, outcomes) == {
        "ok": False,
        "targets": [
            {"mac": MAC, "packets": 2, "sent": ["127.0.2.23:9"],
             "errors": ["[::1]:7: Network is unreachable"]},
            {"mac": "xx", "packets": 0, "sent": [], "errors": ["'xx' is not a MAC address"]},
        ],
    }


def test_a_target_with_nothing_sent_is_not_ok() -> None:
    plan = WolPlan((WolTarget(MAC, (V4,)),), repeat=1)
    assert result_body(plan, [SendOutcome(0, V4, "Permission denied")])["ok"] is False


def test_the_result_of_the_largest_command_fits_in_one_event() -> None:
    """Every destination delivered once and failed once, with the longest
    addresses and ports, plus targets whose MAC and addresses are all bad."""
    # The longest canonical IPv6 text, computed (never sent: this test only parses).
    longest = [f"{ipaddress.IPv6Address(2**128 - 1 - n)}%interface-name1" for n in range(4)]
    ports = [65535 - n for n in range(MAX_PORTS)]
    full_targets = MAX_DESTINATIONS // (MAX_ADDRESSES * MAX_PORTS)
    body = _body(
        *[_target(MAC, *longest)] * full_targets,
        *[_target("aa:bb:cc:dd:ee:zz", *["zzzz::zzzz"] * MAX_ADDRESSES)]
        * (MAX_TARGETS - full_targets),
        ports=ports,
    )
    plan = parse_wol_body(body, DEFAULTS)
    outcomes = [
        SendOutcome(index, destination, error)
        for index, target in enumerate(plan.targets)
        for destination in target.destinations
        for error in (None, "Address family not supported by protocol")
    ]
    event = Event(EventType.WOL_RESULT, 1_700_000_000.0, "f" * 32, result_body(plan, outcomes))
    raw = encode_event(event)
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert decode_event(raw) == event
