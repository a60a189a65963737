"""Wake-on-LAN, sans-IO: MAC addresses, magic packets, the ``wol`` command body
and the ``wol_result`` event body.

The server asks a relay agent to wake machines with a ``wol`` command whose body
is::

    {"targets": [{"mac": "aa:bb:cc:dd:ee:ff",
                  "addresses": ["192.0.2.255", "192.0.2.23"]}],
     "ports": [7, 9], "repeat": 3}

``ports`` and ``repeat`` are optional; the agent's ``WolSettings`` fill them in.
The agent sends one magic packet per target, address and port, ``repeat`` times,
and answers with a ``wol_result`` event whose body is::

    {"ok": false,
     "targets": [{"mac": "aa:bb:cc:dd:ee:ff", "packets": 6,
                  "sent": ["192.0.2.255:7", "192.0.2.255:9", "192.0.2.23:7"],
                  "errors": ["192.0.2.23:9: Network is unreachable"]}]}

A MAC or address that cannot be parsed is an error of its target only; the other
targets are still woken. A body that is not this shape, or asks for more than the
bounds below, is refused whole.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from epns import fields
from epns.agent_config import WolSettings
from epns.errors import MalformedMessage

__all__ = [
    "MAX_ADDRESSES",
    "MAX_DESTINATIONS",
    "MAX_PORTS",
    "MAX_REPEAT",
    "MAX_TARGETS",
    "Destination",
    "SendOutcome",
    "WolPlan",
    "WolTarget",
    "magic_packet",
    "parse_address",
    "parse_mac",
    "parse_wol_body",
    "result_body",
    "wol_result_body",
]

# A signed command still must not turn a relay into a packet cannon, and the
# result of the largest command must fit in one event (MAX_MESSAGE_BYTES).
MAX_TARGETS = 16
MAX_ADDRESSES = 4
MAX_PORTS = 4
MAX_REPEAT = 10
# Destinations (address and port pairs) summed over all targets: each costs
# ``repeat`` packets and a line or two in the result.
MAX_DESTINATIONS = 64

_MAC_FORMS = tuple(
    re.compile(pattern)
    for pattern in (
        r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}",
        r"[0-9a-f]{2}(?:-[0-9a-f]{2}){5}",
        r"[0-9a-f]{4}(?:\.[0-9a-f]{4}){2}",
        r"[0-9a-f]{12}",
    )
)
_MAC_SEPARATORS = str.maketrans("", "", ":-.")


def parse_mac(text: str) -> str:
    """``text`` as ``aa:bb:cc:dd:ee:ff``; MalformedMessage unless it is a MAC address
    in colon, hyphen, dotted (``aabb.ccdd.eeff``) or bare (``aabbccddeeff``) form."""
    lowered = text.lower()
    if not any(form.fullmatch(lowered) for form in _MAC_FORMS):
        raise MalformedMessage(
            f"{text!r} is not a MAC address "
            "(use aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff)"
        )
    digits = lowered.translate(_MAC_SEPARATORS)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def magic_packet(mac: str) -> bytes:
    """The 102-byte magic packet for ``mac``: six 0xFF bytes, then the MAC 16 times."""
    return b"\xff" * 6 + bytes.fromhex(parse_mac(mac).replace(":", "")) * 16


def parse_address(text: str) -> str:
    """``text`` as a canonical IPv4 or IPv6 address; MalformedMessage otherwise.

    Host names are refused: a relay resolves nothing, so a command cannot make it
    depend on, or send queries to, the local DNS.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise MalformedMessage(f"{text!r} is not an IPv4 or IPv6 address") from None
    if address.is_unspecified:
        raise MalformedMessage(f"{text!r} is the unspecified address, not a destination")
    return str(address)


@dataclass(frozen=True, slots=True)
class Destination:
    """One address and port that magic packets are sent to."""

    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WolTarget:
    """A machine to wake. ``mac`` is normalised, or as given when ``errors`` say it
    is not a MAC; then ``destinations`` is empty."""

    mac: str
    destinations: tuple[Destination, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WolPlan:
    """Everything a relay sends for one ``wol`` command: each target's
    destinations, ``repeat`` times."""

    targets: tuple[WolTarget, ...]
    repeat: int


def parse_wol_body(body: Mapping[str, Any], defaults: WolSettings) -> WolPlan:
    """The plan of a ``wol`` command body; ``defaults`` give the ports and repeat
    it leaves out. MalformedMessage when the body is not the shape or exceeds the
    bounds; a bad MAC or address is only an error of its target."""
    ports = _ports(body.get("ports"), defaults.ports)
    repeat = (defaults.repeat if body.get("repeat") is None
              else _integer(body["repeat"], "repeat", MAX_REPEAT))
    entries = _bounded_list(body.get("targets"), "targets", MAX_TARGETS)
    targets = tuple(_target(entry, ports) for entry in entries)
    count = sum(len(target.destinations) for target in targets)
    if count > MAX_DESTINATIONS:
        raise MalformedMessage(
            f"wol command asks for {count} destinations; at most {MAX_DESTINATIONS} are allowed"
        )
    return WolPlan(targets, repeat)


def _ports(value: object, default: tuple[int, ...]) -> tuple[int, ...]:
    if value is None:
        return default
    return tuple(_integer(port, "port", 65535) for port in _bounded_list(value, "ports", MAX_PORTS))


def _target(entry: object, ports: tuple[int, ...]) -> WolTarget:
    if not isinstance(entry, Mapping):
        raise MalformedMessage("a wol target is not an object")
    mac_text = _text(entry.get("mac"), "mac")
    addresses, errors = _addresses(
        _text(item, "address")
        for item in _bounded_list(entry.get("addresses"), "addresses", MAX_ADDRESSES)
    )
    try:
        mac = parse_mac(mac_text)
    except MalformedMessage as exc:
        return WolTarget(mac_text, (), (str(exc), *errors))
    destinations = tuple(Destination(address, port) for address in addresses for port in ports)
    return WolTarget(mac, destinations, errors)


def _addresses(texts: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The distinct valid addresses among ``texts``, and why the others are not."""
    valid: dict[str, None] = {}
    errors: list[str] = []
    for text in texts:
        try:
            valid[parse_address(text)] = None
        except MalformedMessage as exc:
            errors.append(str(exc))
    return tuple(valid), tuple(errors)


def _bounded_list(value: object, name: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedMessage(f"wol {name} is not a list")
    if not 1 <= len(value) <= limit:
        raise MalformedMessage(f"wol {name} has {len(value)} entries; 1 to {limit} are allowed")
    return value


def _integer(value: object, name: str, high: int) -> int:
    # bool is an int to Python, but ``true`` is not a number in the contract.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise MalformedMessage(f"wol {name} {value!r} is not an integer from 1 to {high}")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"wol {name} {value!r} is not a string")
    return value


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One magic packet sent, or the error that stopped it. ``target`` is the
    index of its target in the plan (two targets may share a MAC)."""

    target: int
    destination: Destination
    error: str | None = None


def result_body(plan: WolPlan, outcomes: Iterable[SendOutcome]) -> dict[str, Any]:
    """The body of the ``wol_result`` event for ``plan``, given every send."""
    per_target: list[list[SendOutcome]] = [[] for _ in plan.targets]
    for outcome in outcomes:
        per_target[outcome.target].append(outcome)
    reports = [
        _target_report(target, sends)
        for target, sends in zip(plan.targets, per_target, strict=True)
    ]
    return {
        "ok": all(report["packets"] and not report["errors"] for report in reports),
        "targets": reports,
    }


MAX_ERROR = 500


def wol_result_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a ``wol_result`` event as the server receives it, checked
    field by field (``epns.fields``): the shape ``result_body`` writes, with
    at most as many targets and destinations as a command can ask for."""
    targets = fields.array(body.get("targets", []), "event.body.targets",
                           max_items=MAX_TARGETS)
    checked: dict[str, Any] = {
        "ok": fields.flag(body.get("ok"), "event.body.ok"),
        "targets": [_checked_target(item, f"event.body.targets[{index}]")
                    for index, item in enumerate(targets)],
    }
    if "errors" in body:
        # Only a command the relay could not read has errors of its own.
        errors = fields.array(body["errors"], "event.body.errors", max_items=MAX_TARGETS)
        checked["errors"] = [fields.prose(item, f"event.body.errors[{index}]",
                                          max_length=MAX_ERROR)
                             for index, item in enumerate(errors)]
    return checked


def _checked_target(value: Any, where: str) -> dict[str, Any]:
    report = fields.mapping(value, where)
    sent = fields.array(report.get("sent", []), f"{where}.sent", max_items=MAX_DESTINATIONS)
    errors = fields.array(report.get("errors", []), f"{where}.errors",
                          max_items=MAX_DESTINATIONS + MAX_ADDRESSES)
    return {
        "mac": fields.text(report.get("mac"), f"{where}.mac", max_length=64),
        "packets": fields.integer(report.get("packets"), f"{where}.packets", low=0,
                                  high=MAX_DESTINATIONS * MAX_REPEAT),
        "sent": [fields.text(item, f"{where}.sent[{index}]", max_length=64)
                 for index, item in enumerate(sent)],
        "errors": [fields.prose(item, f"{where}.errors[{index}]", max_length=MAX_ERROR)
                   for index, item in enumerate(errors)],
    }


def _target_report(target: WolTarget, sends: list[SendOutcome]) -> dict[str, Any]:
    delivered = [send for send in sends if send.error is None]
    # A destination that fails usually fails in every round: report it once.
    failures: dict[Destination, str] = {}
    for send in sends:
        if send.error is not None:
            failures.setdefault(send.destination, send.error)
    return {
        "mac": target.mac,
        "packets": len(delivered),
        "sent": list(dict.fromkeys(str(send.destination) for send in delivered)),
        "errors": [*target.errors, *(f"{dest}: {error}" for dest, error in failures.items())],
    }
