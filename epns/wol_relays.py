"""Wake-on-LAN relay election, sans-IO: which awake agents wake a sleeping
machine, and what they are asked to send.

A sleeping machine is reached through its subnet: the server knows its MAC and
its last address and prefix (from its agent's presence, or from the admin).
Relays are online agents with an interface address inside that subnet, the
most recently heard from first; each is asked to send magic packets to the
subnet broadcast and to the last known address (``epns.wol`` body).

Only the target's *own* address is filtered: an agent's loopback and
link-local interfaces never name its subnet, because every machine has them
and they do not say which LAN it sits on. An address the admin gives is
matched as given, loopback included: in a real fleet a loopback target address
matches nothing useful, and the tests rely on it to stay on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from epns.envelope import Interface
from epns.errors import MalformedMessage
from epns.wol import parse_mac

__all__ = [
    "Candidate",
    "WakePath",
    "elect_relays",
    "path_from_interfaces",
    "relay_body",
    "relay_warning",
    "relays_in",
    "wake_path",
]

# A shorter prefix is not one LAN: it would elect relays that share no link
# with the target, and its "broadcast" is one no router forwards.
MIN_PREFIX = 8


@dataclass(frozen=True, slots=True)
class WakePath:
    """How to reach one sleeping machine: its MAC and, when known, its last
    IPv4 address and subnet. ``mac`` is None only while it is not yet known
    (a preflight asks before anyone named it)."""

    mac: str | None
    address: str | None = None
    subnet: ipaddress.IPv4Network | None = None

    def destinations(self) -> tuple[str, ...]:
        """Where relays send: the subnet broadcast, then the last known address
        (the switch may still know its port; a /32 has only the address)."""
        if self.subnet is None or self.address is None:
            return ()
        return tuple(dict.fromkeys((str(self.subnet.broadcast_address), self.address)))

    def overriding(self, known: WakePath) -> WakePath:
        """This path's MAC and address where given, else ``known``'s: what the
        admin names beats what the agent last reported."""
        located = self if self.address is not None else known
        return WakePath(self.mac or known.mac, located.address, located.subnet)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An online, non-revoked agent that could relay, with its interface
    addresses and when it was last heard from."""

    agent_id: str
    last_seen: float
    addresses: tuple[str, ...]


def wake_path(mac: str | None, address: str | None, prefix: int | None) -> WakePath:
    """A checked path: ``mac`` normalised; ``address`` a unicast IPv4 address,
    given with a prefix from MIN_PREFIX to 32. MalformedMessage says what is wrong."""
    normal = None if mac is None else parse_mac(mac)
    if address is None and prefix is None:
        return WakePath(normal)
    if address is None or prefix is None:
        raise MalformedMessage("give the target's 'address' and 'prefix' together")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise MalformedMessage(f"{address!r} is not an IPv4 address") from None
    if not isinstance(parsed, ipaddress.IPv4Address):
        raise MalformedMessage(f"{address!r} is IPv6: Wake-on-LAN relays need the target's "
                               "IPv4 address (IPv6 has no subnet broadcast)")
    if parsed.is_multicast or parsed.is_unspecified:
        raise MalformedMessage(f"{address!r} is not a machine's address")
    if not MIN_PREFIX <= prefix <= 32:
        raise MalformedMessage(f"prefix {prefix} is not from {MIN_PREFIX} to 32")
    return WakePath(normal, str(parsed), ipaddress.IPv4Network(f"{parsed}/{prefix}",
                                                               strict=False))


def path_from_interfaces(interfaces: Iterable[Interface]) -> WakePath | None:
    """The first interface that can name the machine's LAN: IPv4, with a MAC,
    neither loopback nor link-local. None when there is none."""
    for interface in interfaces:
        if interface.mac is None:
            continue
        try:
            address = ipaddress.ip_address(interface.address)
            if (not isinstance(address, ipaddress.IPv4Address) or address.is_loopback
                    or address.is_link_local):
                continue
            return wake_path(interface.mac, str(address), interface.prefix)
        except (ValueError, MalformedMessage):
            continue  # an agent's odd interface must not hide its good ones
    return None


def relays_in(subnet: ipaddress.IPv4Network, candidates: Iterable[Candidate],
              exclude: str | None = None) -> list[str]:
    """Every candidate with an address in ``subnet`` but ``exclude`` (the
    target itself), the most recently heard from first."""
    found = [c for c in candidates if c.agent_id != exclude and _inside(subnet, c.addresses)]
    found.sort(key=lambda c: (-c.last_seen, c.agent_id))
    return [c.agent_id for c in found]


def _inside(subnet: ipaddress.IPv4Network, addresses: Iterable[str]) -> bool:
    for text in addresses:
        try:
            if ipaddress.ip_address(text) in subnet:
                return True
        except ValueError:
            continue
    return False


def elect_relays(path: WakePath, candidates: Iterable[Candidate], limit: int,
                 exclude: str | None = None) -> list[str]:
    """Up to ``limit`` relays for ``path``; none when its subnet is unknown."""
    return [] if path.subnet is None else relays_in(path.subnet, candidates, exclude)[:limit]


def relay_body(mac: str, addresses: Sequence[str], ports: Sequence[int],
               repeat: int) -> dict[str, Any]:
    """The body of the ``wol`` command a relay gets (``epns.wol`` format)."""
    return {"targets": [{"mac": mac, "addresses": list(addresses)}], "ports": list(ports),
            "repeat": repeat}


def relay_warning(subnet: str | None, relays: int, server_addresses: int) -> str | None:
    """What the admin must know before (and after) sending, or None when a
    relay is online in the target's subnet."""
    if relays:
        return None
    where = (f"no relay agent is online in {subnet}" if subnet is not None
             else "the target's address is not known, so no relay can be chosen")
    if server_addresses:
        plural = "es" if server_addresses > 1 else ""
        return (f"{where}: only the server's own packets go out (to the {server_addresses} "
                f"address{plural} on the settings page), and they reach the target only if "
                "its network forwards them")
    return f"{where}, and the settings page names no server addresses: no packet goes out"
