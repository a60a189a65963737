"""Which connections have been silent past their idle limit, sans-IO.

The hub once compared every connection's last read with its limit each
second: with 10,000 agents idle that loop was nearly all of the broker's idle
CPU (9 ms per sweep, about 0.9 % of a core; docs/benchmark-history.md, "Broker tuning
for issue 6"). Here connections wait in a heap ordered by the time they would
expire if they stayed silent; a check looks only at those past that time,
and one that spoke since is filed again at its new deadline (once per idle
limit at most, 450 s for the agents' 300 s keep-alive).
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Watched(Protocol):
    """An item the watch files: it remembers the deadline it is filed at, so
    that it is filed once (a second entry per connection made every check a
    rebuild of the heap: quadratic in the fleet, 35 % of a core at 2,000
    agents idle, bench/README.md "Issue 15")."""

    idle_filed: float | None


T = TypeVar("T", bound=Watched)

# Entries of connections gone (closed, or collected) are dropped once the heap
# holds more than twice the live ones and this slack, so a reconnect storm
# cannot grow it without bound, and a steady fleet never rebuilds it.
_SLACK = 1024


class IdleWatch(Generic[T]):
    """Items (held weakly) by deadline, soonest first, each filed once."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[T]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, item: T, deadline: float) -> bool:
        """Expire ``item`` at ``deadline`` unless its deadline moves. False
        when it is filed at that time or sooner already: that entry, when
        due, files it again at its deadline then."""
        if item.idle_filed is not None and item.idle_filed <= deadline:
            return False
        item.idle_filed = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), weakref.ref(item)))
        return True

    def next_deadline(self) -> float | None:
        """The earliest deadline filed, if any (it may since have moved)."""
        return self._heap[0][0] if self._heap else None

    def expired(self, now: float, deadline_of: Callable[[T], float | None]) -> list[T]:
        """The items whose current deadline (``deadline_of``; None: no longer
        watched) is before ``now``; the others looked at are filed again."""
        found: list[T] = []
        while self._heap and self._heap[0][0] < now:
            filed, _, ref = heapq.heappop(self._heap)
            item = ref()
            if item is None or item.idle_filed != filed:
                continue  # collected, or filed sooner since: a stale entry
            item.idle_filed = None
            deadline = deadline_of(item)
            if deadline is None:
                continue
            if deadline < now:
                found.append(item)
            else:
                self.watch(item, deadline)
        return found

    def prune(self, alive: int) -> None:
        """Drop the entries of items gone or filed again, once the heap holds
        more than twice ``alive`` and a slack."""
        if len(self._heap) <= 2 * alive + _SLACK:
            return
        self._heap = [entry for entry in self._heap
                      if (item := entry[2]()) is not None and item.idle_filed == entry[0]]
        heapq.heapify(self._heap)
