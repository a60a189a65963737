"""Reconnect backoff: exponential with full jitter, reset once a connection lasts.

Full jitter (a uniform draw between 0 and the exponential bound) is what keeps
a fleet from coming back in synchronized waves after a broker restart. The
bound itself is tenacity's ``wait_random_exponential``; the load generator in
``bench/`` imports this class so simulated agents back off like real ones.
"""

from __future__ import annotations

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential


class Backoff:
    """Delays for consecutive failed attempts: uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float, cap: float) -> None:
        self._wait = wait_random_exponential(multiplier=base, max=cap)
        self._state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failure."""
        self.attempts += 1
        self._state.attempt_number = self.attempts
        return float(self._wait(self._state))

    def reset(self) -> None:
        """A connection has been stable: start again from the base delay."""
        self.attempts = 0
