"""Admission of the agents' syncs: at most ``max_concurrent`` are served at
once, and up to ``max_queued`` more wait at most ``queue_wait`` seconds for a
slot before they are refused (429).

The short wait is what lets a wake-all drain at the server's own speed: with
a refusal at once, every sync beyond the slots came back only after its
Retry-After (10-20 s), and 1,000 agents woken together took about 50 s to be
satisfied while the server was a third idle (bench/README.md, scenario 6).
The bound on waiters keeps a storm from parking unbounded requests.
"""

from __future__ import annotations

import asyncio


class SyncAdmission:
    """Slots for syncs, with a short, bounded queue in front of them."""

    def __init__(self, *, max_concurrent: int, max_queued: int, queue_wait: float) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_queued = max_queued
        self._queue_wait = queue_wait
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Syncs waiting for a slot now."""
        return self._waiting

    async def acquire(self) -> bool:
        """Take a slot; False when none came free in time (or the queue is full)."""
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        if self._queue_wait <= 0 or self._waiting >= self._max_queued:
            return False
        self._waiting += 1
        try:
            async with asyncio.timeout(self._queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        self._slots.release()
