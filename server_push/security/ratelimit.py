"""Per-caller token buckets for the wake-up API, sans-IO: the caller passes the clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``burst`` requests at once, refilled at ``per_minute``; memory is
    bounded by forgetting full buckets."""

    def __init__(self, per_minute: float, burst: int, max_callers: int = 10_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}
        self._max_callers = max_callers

    def take(self, caller: str, now: float) -> float:
        """Spend one token; returns 0 when allowed, else the seconds to wait."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self._max_callers:
                self._forget_full(now)
            bucket = self._buckets[caller] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate if self._rate > 0 else float("inf")

    def _forget_full(self, now: float) -> None:
        self._buckets = {caller: b for caller, b in self._buckets.items()
                         if b.tokens + (now - b.at) * self._rate < self._burst}
