"""Keep CPython's cyclic garbage collector away from the connected fleet.

Every agent was about 190 to 230 long-lived container objects on the
amqtt-based broker (amqtt's session and its ``transitions`` state machine,
the handler, the TLS transport), so 10,000 agents were about 1.9 million
objects, and with stock
settings the collector's full (generation 2) collections traverse all of them
again each time the heap has grown by a quarter. In the hold benchmark at
N = 10,000 (docs/benchmark-history.md, "GC tuning") that was 14 full collections during
the connect phase, 6.0 s of the broker's 31 s of CPU, each stopping the event
loop for up to 1.16 s, and together they freed 173 objects.

So objects that survive ``freeze_interval`` are moved out of the collector's
reach (``gc.freeze()``, which only splices lists): the automatic collections
then look at nothing older than the last freeze. With a 1 s interval the
longest collection at N = 10,000 was 59 ms, and the connect cost no longer grows
with the number of connected agents.

What ``gc.freeze()`` gives up: a reference cycle among frozen objects that
dies later is not freed (reference counting still frees everything else). The
amqtt-based broker made such cycles (each resumed session left amqtt's
duplicate session, about 180 objects); the core of issue 15 keeps about 12
objects per agent besides its TLS transport (gc.get_objects over 200 agents
held in memory) and breaks its one session-connection cycle at disconnect,
so these collections now find little, but the policy stays for the TLS
transports and whatever a future change leaves behind. A full
collection of everything (``gc.unfreeze()``, ``gc.collect()``,
``gc.freeze()``) frees them; it runs at most once per
``full_collection_interval``, and only once the process's peak memory has grown
by a quarter since the last one, the proportion CPython itself waits for. A
fleet that is not growing and makes no garbage never pays for it; a reconnect
storm is not interrupted by it more than once per interval. It stops the
broker for about 0.2 s per 1,000 sessions (2.0 s with 10,000 agents
connected) and is logged (``gc_full_collection``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import time

from epns.broker_config import GCSettings
from epns.logs import event

log = logging.getLogger(__name__)

# How much the process must have grown since the last full collection for the
# next one to be due: the proportion CPython itself waits for before a full
# collection (long_lived_pending > long_lived_total / 4).
FULL_COLLECTION_GROWTH = 0.25


def peak_memory() -> int:
    """The process's peak resident memory (KiB on Linux, bytes on macOS: only
    ratios are used). One system call; gc.get_freeze_count() instead walks every
    frozen object, about 0.2 s with 10,000 agents connected, and counting the
    unfrozen ones with gc.get_objects() at each tick cost 6.5 KiB of RSS per agent
    (measured: the lists it allocates fragment the heap)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class GCPolicy:
    """Freezes survivors periodically; collects everything rarely."""

    def __init__(self, settings: GCSettings) -> None:
        self.settings = settings
        self._last_full = 0.0
        self._peak_after_full = 0

    @property
    def enabled(self) -> bool:
        """False with ``freeze_interval = 0``: stock CPython GC."""
        return self.settings.freeze_interval > 0

    def start(self, now: float) -> None:
        """After start-up: the modules and the broker's own objects live as long
        as the process."""
        if self.enabled:
            gc.collect()
            gc.freeze()
            self._collected(now)

    def tick(self, now: float) -> None:
        """Freeze what survived since the last tick; collect everything when due."""
        gc.freeze()
        if (now - self._last_full >= self.settings.full_collection_interval
                and peak_memory() > self._peak_after_full * (1 + FULL_COLLECTION_GROWTH)):
            self.full_collection(now)

    def full_collection(self, now: float) -> int:
        """Collect everything, frozen objects included; freeze the survivors."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self._collected(now)
        event(log, "gc_full_collection", collected=collected,
              seconds=round(time.perf_counter() - started, 3))
        return collected

    def _collected(self, now: float) -> None:
        self._last_full = now
        self._peak_after_full = peak_memory()

    async def run(self) -> None:
        """Tick every ``freeze_interval`` until cancelled; nothing when disabled."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(self.settings.freeze_interval)
            self.tick(time.monotonic())
