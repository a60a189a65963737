"""The server's own magic packets, sent straight from its host to the
multicast and broadcast addresses on the settings page: the same plan and
outcomes as an agent relay (``epns.wol``), over plain UDP sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from epns.wol import Destination, SendOutcome, WolPlan, magic_packet

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def allowed_networks(texts: Sequence[str]) -> Networks:
    """The operator's ``wol.allowed_networks``, parsed."""
    return [ipaddress.ip_network(text) for text in texts]


async def send_plan(plan: WolPlan, spacing: float, allowed: Networks) -> list[SendOutcome]:
    """Every packet of ``plan``, ``spacing`` seconds between rounds; a send that
    fails, or whose destination is outside ``allowed``, is an outcome, never raised."""
    outcomes: list[SendOutcome] = []
    for round_number in range(plan.repeat):
        if round_number:
            await asyncio.sleep(spacing)
        # Blocking sockets, a few dozen packets: a worker thread keeps the loop free.
        outcomes += await asyncio.to_thread(_send_round, plan, allowed)
    return outcomes


def _send_round(plan: WolPlan, allowed: Networks) -> list[SendOutcome]:
    return [_send(index, target.mac, destination) if _inside(destination, allowed)
            else SendOutcome(index, destination, "outside the server's wol.allowed_networks")
            for index, target in enumerate(plan.targets)
            for destination in target.destinations]


def _inside(destination: Destination, allowed: Networks) -> bool:
    address = ipaddress.ip_address(destination.address)
    return any(address in network for network in allowed)


def _send(index: int, mac: str, destination: Destination) -> SendOutcome:
    family = socket.AF_INET6 if ":" in destination.address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            # Broadcast addresses are the point of these sends; multicast needs
            # nothing more (its TTL of 1 keeps it on the server's own link).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.sendto(magic_packet(mac), (destination.address, destination.port))
    except OSError as exc:
        return SendOutcome(index, destination, exc.strerror or str(exc))
    return SendOutcome(index, destination)
