"""Give the C heap's free pages back to the system after a burst of closed connections.

Measured (docs/memory.md): 10 rounds of 500 TLS handshakes left hanging, each
closed at the handshake timeout, took the broker from 41 to 166 MiB of RSS, and
it stayed there idle. Not a leak: glibc's ``mallinfo2`` counted 6 MiB in use
before the burst and after it, and 161 MiB free inside the brk heap. A
handshake in progress holds about 330 KiB: uvloop's SSLProtocol with its
256 KiB read buffer (mostly never touched) and some 74 KiB of
OpenSSL's SSL object, its buffers and the Python objects. Once glibc has freed
one such buffer from its own mapping it raises its mmap threshold, so from the
second burst on they all come from the heap. When the handshakes end all of it
is freed, but glibc gives memory back to the system only from the top of the
heap, and a few allocations made during the burst stay above the holes; each
round lays its allocations out a little differently, so the resident part of
the holes grows round after round. ``malloc_trim(0)`` returns every free page,
holes included: 166 to 44 MiB in 38 ms. A 30-line uvloop server with nothing
but a handshake timeout does the same (35 to 134 MiB, 37 after
``malloc_trim``; stock asyncio, whose 256 KiB buffer is zero-filled, 33 to 201
MiB). What did not help: the GC policy off, ``MALLOC_ARENA_MAX=1`` (it is all
the main arena already), ``M_TRIM_THRESHOLD`` (it trims only the top), a fixed
``M_MMAP_THRESHOLD`` (the heap's holes are then reused for the buffers).

So the broker calls ``malloc_trim(0)`` once ``release_after_closes``
connections have closed since the last call, and never twice within
``release_interval``: what it may leave resident is bounded by the pages of
that many handshakes (about 55 KiB each). A call walks the heap's free chunks:
15 ms to give back 47 MiB of a 100 MiB heap, 90 ms for 446 MiB of a 1 GiB
heap, 15 ms for a 1 GiB heap with nothing to give; in the broker 0 to 43 ms.
A page it gave back costs a page fault when used again. Where the C library
has no ``malloc_trim`` (musl, macOS) nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path

from epns.broker_config import MemorySettings
from epns.logs import event

log = logging.getLogger(__name__)

# How often the close count is looked at.
_TICK = 1.0


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` (1 if it gave memory back), or None where
    the C library has none."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int

    def trim() -> int:
        return int(function(0))

    return trim


def rss_kib() -> int:
    """This process's resident memory in KiB (0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * resource.getpagesize() // 1024


class HeapRelease:
    """Decides when to hand free heap memory back, from a count of closed
    connections and an explicit clock; ``release`` does it."""

    def __init__(self, settings: MemorySettings, closed: Callable[[], int],
                 trim: Callable[[], int] | None) -> None:
        self.settings = settings
        self._closed = closed
        self._trim = trim
        self._closed_at_release = closed()
        self._released_at = float("-inf")

    @property
    def enabled(self) -> bool:
        """False with ``release_after_closes = 0`` or without ``malloc_trim``."""
        return self.settings.release_after_closes > 0 and self._trim is not None

    def due(self, now: float) -> bool:
        """Whether enough connections closed, long enough ago, to release now."""
        return (self._closed() - self._closed_at_release >= self.settings.release_after_closes
                and now - self._released_at >= self.settings.release_interval)

    def release(self, now: float) -> None:
        """``malloc_trim(0)`` now, and one log line of what it gave back."""
        assert self._trim is not None
        closed = self._closed()
        before = rss_kib()
        started = time.perf_counter()
        self._trim()
        event(log, "memory_released", closed=closed - self._closed_at_release,
              rss_before_kib=before, rss_after_kib=rss_kib(),
              seconds=round(time.perf_counter() - started, 3))
        self._closed_at_release = closed
        self._released_at = now

    async def run(self) -> None:
        """Tick every second until cancelled; nothing when disabled."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(_TICK)
            now = time.monotonic()
            if self.due(now):
                self.release(now)
