"""Where connections come from, for fair admission, sans-IO.

A source is an address and its subnet: a /24 for IPv4, a /64 for IPv6 (one
site, one customer line; an IPv6 host may use any address of its /64, so
there the subnet is the real source). Per source the broker keeps a token
bucket (``BucketTable``, bounded: a spray of addresses cannot grow it) and
the TLS handshakes in progress (``HandshakeCount``, bounded by the open
connections). ``broker.admission`` decides with them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A peer's address and its subnet, both in canonical text form."""

    address: str
    subnet: str


@functools.lru_cache(maxsize=4_096)
def source_of(host: str) -> Source | None:
    """The source of a peer address; None for what is not an IP address
    (a Unix socket's peer). Cached: parsing costs 12 us, and a flood comes
    from few addresses."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener's IPv4 peer is an IPv4 source
    prefix = 24 if ip.version == 4 else 64
    return Source(str(ip), str(ipaddress.ip_network((ip, prefix), strict=False)))


class BucketTable:
    """A token bucket per key (``rate`` a second, at most ``burst``), for at
    most ``max_keys`` keys, least recently used forgotten first.

    A key whose bucket has filled up again is forgotten as well: it is no
    different from a key never seen, which starts full. So a forgotten key
    only ever gains, and the table holds the sources active lately."""

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        # key -> (tokens, when they were counted); tuples, about 250 bytes a key.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: str, now: float) -> float:
        """The tokens ``key`` has now (the burst for a key not in the table).
        Asking counts as use: a source refused for want of tokens stays in
        the table, so a spray of other addresses cannot make it new again."""
        counted = self._buckets.get(key)
        if counted is None:
            return self._burst
        self._buckets.move_to_end(key)
        return self._refilled(counted, now)

    def take(self, key: str, now: float) -> None:
        """Spend one of ``key``'s tokens (the caller checked there is one)."""
        counted = self._buckets.pop(key, None)
        tokens = self._burst if counted is None else self._refilled(counted, now)
        self._forget(now)
        self._buckets[key] = (tokens - 1.0, now)

    def _refilled(self, counted: tuple[float, float], now: float) -> float:
        tokens, stamp = counted
        return min(self._burst, tokens + max(0.0, now - stamp) * self._rate)

    def _forget(self, now: float) -> None:
        """Make room for one key: drop the oldest while the table is full or
        the oldest has filled up again."""
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if len(self._buckets) < self._max_keys and self._refilled(oldest, now) < self._burst:
                return
            self._buckets.popitem(last=False)


class HandshakeCount:
    """TLS handshakes in progress, per address. Only addresses with one in
    progress are kept, so it is no larger than the open connections."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, address: str) -> int:
        """Handshakes of ``address`` in progress."""
        return self._counts.get(address, 0)

    def started(self, address: str) -> None:
        """One more of ``address``'s handshakes began."""
        self._counts[address] = self._counts.get(address, 0) + 1

    def ended(self, address: str) -> None:
        """One of ``address``'s handshakes ended, however it did."""
        left = self._counts.get(address, 0) - 1
        if left > 0:
            self._counts[address] = left
        else:
            self._counts.pop(address, None)
