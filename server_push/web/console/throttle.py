"""Failed console logins, counted so that an attacker cannot lock the owner out.

Each login attempt is counted against keys, each with its own limit of
failures inside the last ``window`` seconds; a key at its limit is refused
until its oldest failure leaves the window:

- ``pair:<source>|<account>``: one address guessing one account. Its limit
  is the small one (``failed_login_limit``). Other addresses are not
  concerned, so an attacker guessing ``admin`` from address A does not stop
  the admin logging in from B.
- ``source:<source>``: one address spraying many accounts
  (``failed_login_source_limit``). An address that has not failed is never
  refused by it.
- ``device:<nonce>``: a browser that logged in as this account before and
  holds its signed device cookie (``device_cookie.py``). It is counted apart
  from its address, so the admin behind the attacker's NAT (or on the same
  jump host) still logs in with the right password; a stolen device cookie
  buys no more guesses than the pair's limit.

There is deliberately no key for the account alone: that is the key an
attacker fills from anywhere to lock the owner out everywhere.

The counts live in memory: a restart forgets them, which costs an attacker a
restart, not the admins a lock-out that outlives its cause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

# Bounds memory when someone sprays random user names.
MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Key:
    """A counter and its limit of failures per window."""

    name: str
    limit: int


def login_keys(source: str, account: str, *, device: str | None,
               limit: int, source_limit: int) -> tuple[Key, ...]:
    """The counters a login attempt is judged by (the module docstring)."""
    if device is not None:
        return (Key(f"device:{device}", limit),)
    return (Key(f"pair:{source}|{account}", limit), Key(f"source:{source}", source_limit))


class LoginThrottle:
    """Sliding-window counts of failed logins per key."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, keys: Iterable[Key], now: float) -> float:
        """Seconds until every key may try again; 0 when all may try now."""
        wait = 0.0
        for key in keys:
            failures = self._recent(key.name, now)
            if failures is not None and len(failures) >= max(1, key.limit):
                wait = max(wait, failures[-max(1, key.limit)] + self._window - now)
        return wait

    def failed(self, keys: Iterable[Key], now: float) -> None:
        """Count one failed login against every key."""
        for key in keys:
            failures = self._recent(key.name, now)
            if failures is None:
                if len(self._failures) >= MAX_KEYS:
                    self._failures.pop(next(iter(self._failures)))
                failures = self._failures[key.name] = deque()
            failures.append(now)
            while len(failures) > max(1, key.limit):
                failures.popleft()

    def succeeded(self, keys: Iterable[Key]) -> None:
        """Forget the failures of a login that just succeeded: its pair or
        device key, not its address's count across other accounts."""
        for key in keys:
            if not key.name.startswith("source:"):
                self._failures.pop(key.name, None)

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
