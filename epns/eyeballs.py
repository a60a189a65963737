"""Happy Eyeballs (RFC 8305) ordering, sans-IO.

A host with IPv6 and IPv4 addresses is dialled on both families at once,
staggered: a broken IPv6 path (common behind some NATs and VPNs) costs a
quarter of a second, not a whole TCP timeout per address.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["ATTEMPT_DELAY", "AddrInfo", "interleave"]

# RFC 8305 section 5 recommends 250 ms between attempts.
ATTEMPT_DELAY = 0.25

# A ``getaddrinfo`` result: (family, type, proto, canonname, sockaddr).
AddrInfo = TypeVar("AddrInfo", bound=tuple[Any, ...])


def interleave(infos: Sequence[AddrInfo]) -> list[AddrInfo]:
    """``getaddrinfo`` results with the families alternating, the resolver's
    first family first (RFC 8305 section 4), each family's order kept."""
    families: dict[object, list[AddrInfo]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    rounds = itertools.zip_longest(*families.values())
    return [info for row in rounds for info in row if info is not None]
