"""Admission control, sans-IO: a connection limit, a token-bucket rate, and
per-source fairness on top of the rate.

All decide on the raw TCP connection, before any TLS work, so a reconnect
storm costs the broker an accept and a close per refused client, not a handshake.

Fairness (issue 15: one host's 23,000 attempts in 5 s kept 4 of 10 agents
out). The global bucket is shared, not split: while it holds more than its
reserve (``FairShare.reserve``, half the burst by default) any source takes
from it, so a lone source, a whole office behind one NAT reconnecting after
a broker restart included, gets the broker's full rate. The reserve is kept
for the sources within their own share: an address's bucket and its
subnet's (``broker.sources``), charged on every admission. A source past
its share gets only what is above the reserve, while the others, still
within theirs, draw on the reserve; so a flood takes the capacity nobody
else wants and no more. The TLS handshakes in progress per address are
capped at all times: a handshake left hanging holds a socket for
``tls_handshake_timeout``, and one host must not hold the broker's sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from broker.sources import BucketTable, HandshakeCount, Source


class Refusal(StrEnum):
    """Why a new connection was turned away at the door."""

    CONNECTION_LIMIT = "connection_limit"
    ADMISSION_RATE = "admission_rate"
    # Past its address's or its subnet's share while the global bucket is low.
    SOURCE_RATE = "source_rate"
    SUBNET_RATE = "subnet_rate"
    # Too many TLS handshakes of its address in progress.
    SOURCE_HANDSHAKES = "source_handshakes"


@dataclass(frozen=True)
class FairShare:
    """Per-source limits on top of the global rate (the module docstring)."""

    # New connections per second (and burst) of one address, and of one subnet.
    address_rate: float = 20.0
    address_burst: int = 50
    subnet_rate: float = 100.0
    subnet_burst: int = 200
    # The fraction of the global burst kept for sources within their share.
    reserve: float = 0.5
    # TLS handshakes in progress per address.
    handshakes: int = 500
    # Sources remembered (per table: addresses, subnets).
    max_sources: int = 16_384


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def level(self, now: float) -> float:
        """The tokens there are now."""
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._stamp = now
        return self._tokens

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if self.level(now) >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class AdmissionGate:
    """Counts open connections and decides whether one more may come in."""

    def __init__(self, max_connections: int, rate: float, burst: int, now: float,
                 fair: FairShare | None = None) -> None:
        self._max = max_connections
        self._bucket = TokenBucket(rate, burst, now)
        self._fair = fair or FairShare()
        self._reserve = self._fair.reserve * burst
        self._addresses = BucketTable(self._fair.address_rate, self._fair.address_burst,
                                      self._fair.max_sources)
        self._subnets = BucketTable(self._fair.subnet_rate, self._fair.subnet_burst,
                                    self._fair.max_sources)
        self.handshakes = HandshakeCount()
        self.open = 0

    def admit(self, now: float, source: Source | None = None, *,
              handshake: bool = True) -> Refusal | None:
        """Admit one connection from ``source`` (None: unknown, the global
        limits only) and count it, or say why not. With ``handshake`` its
        TLS handshake starts now: call ``handshake_ended`` when it ends."""
        if self.open >= self._max:
            return Refusal.CONNECTION_LIMIT
        if (source is not None and handshake
                and self.handshakes.count(source.address) >= self._fair.handshakes):
            return Refusal.SOURCE_HANDSHAKES
        tokens = self._bucket.level(now)
        if tokens < 1.0:
            return Refusal.ADMISSION_RATE
        if source is not None:
            past_share = self._charge(source, now)
            if past_share is not None and tokens < self._reserve + 1.0:
                return past_share
            if handshake:
                self.handshakes.started(source.address)
        self._bucket.take(now)
        self.open += 1
        return None

    def _charge(self, source: Source, now: float) -> Refusal | None:
        """Spend a token of the source's address and subnet, or say which has none."""
        if self._addresses.tokens(source.address, now) < 1.0:
            return Refusal.SOURCE_RATE
        if self._subnets.tokens(source.subnet, now) < 1.0:
            return Refusal.SUBNET_RATE
        self._addresses.take(source.address, now)
        self._subnets.take(source.subnet, now)
        return None

    def handshake_ended(self, source: Source | None) -> None:
        """The TLS handshake of a connection admitted from ``source`` ended."""
        if source is not None:
            self.handshakes.ended(source.address)

    def release(self) -> None:
        """An admitted connection has closed."""
        self.open -= 1
