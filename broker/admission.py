"""Admission control, sans-IO: a connection limit and a token-bucket rate.

Both decide on the raw TCP connection, before any TLS work, so a reconnect
storm costs the broker an accept and a close per refused client, not a handshake.
"""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    """Why a new connection was turned away at the door."""

    CONNECTION_LIMIT = "connection_limit"
    ADMISSION_RATE = "admission_rate"


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class AdmissionGate:
    """Counts open connections and decides whether one more may come in."""

    def __init__(self, max_connections: int, rate: float, burst: int, now: float) -> None:
        self._max = max_connections
        self._bucket = TokenBucket(rate, burst, now)
        self.open = 0

    def admit(self, now: float) -> Refusal | None:
        """Admit one connection (and count it), or say why not."""
        if self.open >= self._max:
            return Refusal.CONNECTION_LIMIT
        if not self._bucket.take(now):
            return Refusal.ADMISSION_RATE
        self.open += 1
        return None

    def release(self) -> None:
        """An admitted connection has closed."""
        self.open -= 1
