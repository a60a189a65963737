"""Failed console logins, counted per user name and per client address.

A key with ``limit`` failures inside the last ``window`` seconds is refused
until its oldest failure leaves the window. Counting per address stops one
client guessing many users; counting per user stops many clients guessing one.
The counts live in memory: a restart forgets them, which costs an attacker a
restart, not the admins a lock-out that outlives its cause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

# Bounds memory when someone sprays random user names.
MAX_KEYS = 10_000


class LoginThrottle:
    """Sliding-window counts of failed logins per key."""

    def __init__(self, limit: int, window: float) -> None:
        self._limit = max(1, limit)
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, keys: Iterable[str], now: float) -> float:
        """Seconds until every key may try again; 0 when all may try now."""
        wait = 0.0
        for key in keys:
            failures = self._recent(key, now)
            if failures is not None and len(failures) >= self._limit:
                wait = max(wait, failures[0] + self._window - now)
        return wait

    def failed(self, keys: Iterable[str], now: float) -> None:
        """Count one failed login against every key."""
        for key in keys:
            failures = self._recent(key, now)
            if failures is None:
                if len(self._failures) >= MAX_KEYS:
                    self._failures.pop(next(iter(self._failures)))
                failures = self._failures[key] = deque()
            failures.append(now)
            while len(failures) > self._limit:
                failures.popleft()

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key`` (the user who just logged in)."""
        self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures
