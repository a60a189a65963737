"""Keep one agent awake per subnet, sans-IO: which agent holds off sleep so
that a Wake-on-LAN relay exists in its subnet when every other machine
sleeps, and what the server tells each agent.

A subnet is named by the IPv4 interfaces agents report in their presence:
loopback and link-local ones are left out (every machine has them, and they
say nothing about which LAN it is on), and so are prefixes shorter than
``epns.wol_relays.MIN_PREFIX`` or longer than /30 (no LAN to relay in).

The election per subnet is stable and deterministic:

- only online agents that allow it (their config's ``wol.allow_keep_awake``,
  reported in presence) can be elected; an agent that did not say (older than
  keep-awake) cannot, as it does not know the command;
- the current keeper stays while it is still eligible there, unless it
  reported that it could not hold sleep off and another eligible agent has
  not failed;
- otherwise the eligible agent that has not failed, then by id, wins.

What each agent is told follows from the keepers and what the agent last
reported (``instruction``): the server sends hold or release only where the
agent's word differs from what is wanted, and again after the agent
reconnected (a restarted agent holds nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from epns.envelope import Interface
from epns.wol_relays import MIN_PREFIX

__all__ = [
    "MAX_PREFIX",
    "Member",
    "SubnetState",
    "elect_keepers",
    "instruction",
    "lan_subnets",
    "subnet_states",
    "wanted_holds",
]

# /31 and /32 are point-to-point or single hosts: no LAN to keep a relay in.
MAX_PREFIX = 30


@dataclass(frozen=True, slots=True)
class Member:
    """What the election knows of one agent."""

    agent_id: str
    online: bool
    # Its config allows keep-awake (None: it did not say).
    allowed: bool | None
    subnets: frozenset[str]
    # It reported that it could not hold sleep off (and has not held since).
    failed: bool = False

    @property
    def eligible(self) -> bool:
        """Online and allowing it: it may be elected."""
        return self.online and self.allowed is True


@dataclass(frozen=True, slots=True)
class SubnetState:
    """One subnet as the console and API show it."""

    subnet: str
    agents: int
    online: int
    eligible: int
    keeper: str | None


def lan_subnets(interfaces: Iterable[Interface]) -> frozenset[str]:
    """The IPv4 LANs these interfaces sit on, as ``a.b.c.d/n``."""
    found: set[str] = set()
    for interface in interfaces:
        try:
            address = ipaddress.ip_address(interface.address)
        except ValueError:
            continue
        if (not isinstance(address, ipaddress.IPv4Address) or address.is_loopback
                or address.is_link_local or address.is_unspecified or address.is_multicast
                or not MIN_PREFIX <= interface.prefix <= MAX_PREFIX):
            continue
        found.add(str(ipaddress.IPv4Network(f"{address}/{interface.prefix}", strict=False)))
    return frozenset(found)


def elect_keepers(members: Iterable[Member],
                  current: Mapping[str, str]) -> dict[str, str | None]:
    """Per subnet any member reports, its keeper (None: no eligible agent).
    ``current`` is the keeper per subnet before this election."""
    listed = sorted(members, key=lambda m: m.agent_id)
    subnets = sorted({subnet for member in listed for subnet in member.subnets})
    keepers: dict[str, str | None] = {}
    for subnet in subnets:
        eligible = [m for m in listed if m.eligible and subnet in m.subnets]
        holder = next((m for m in eligible if m.agent_id == current.get(subnet)), None)
        better = next((m for m in eligible if not m.failed), None)
        if holder is not None and (not holder.failed or better is None):
            keepers[subnet] = holder.agent_id
        else:
            chosen = better or (eligible[0] if eligible else None)
            keepers[subnet] = None if chosen is None else chosen.agent_id
    return keepers


def wanted_holds(keepers: Mapping[str, str | None]) -> dict[str, tuple[str, ...]]:
    """Per agent that must hold sleep off, the subnets it keeps, sorted."""
    holds: dict[str, list[str]] = {}
    for subnet, keeper in sorted(keepers.items()):
        if keeper is not None:
            holds.setdefault(keeper, []).append(subnet)
    return {agent: tuple(subnets) for agent, subnets in holds.items()}


def subnet_states(members: Iterable[Member],
                  keepers: Mapping[str, str | None]) -> list[SubnetState]:
    """Every subnet with its agents, those online and eligible, and its keeper."""
    listed = list(members)
    states = []
    for subnet in sorted({s for m in listed for s in m.subnets}, key=_network_order):
        inside = [m for m in listed if subnet in m.subnets]
        states.append(SubnetState(subnet, len(inside), sum(m.online for m in inside),
                                  sum(m.eligible for m in inside), keepers.get(subnet)))
    return states


def instruction(*, want: bool, holding: bool | None, sent: bool | None,
                sent_at: float | None, online_since: float | None) -> bool | None:
    """What to send an online agent now: True (hold), False (release) or None
    (nothing). ``holding`` is what it last reported; ``sent`` and ``sent_at``
    the last instruction; ``online_since`` when its current connection began.
    An instruction is repeated only after the agent reconnected, so an agent
    that cannot hold is not asked again and again."""
    if holding is want or (holding is None and not want):
        return None
    fresh = sent_at is not None and (online_since is None or sent_at >= online_since)
    if sent is want and fresh:
        return None
    return want


def _network_order(subnet: str) -> tuple[int, int]:
    network = ipaddress.IPv4Network(subnet)
    return int(network.network_address), network.prefixlen
