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
from typing import Generic, TypeVar

T = TypeVar("T")

# Entries of connections gone (closed, or collected) are dropped when they
# outnumber the live ones by this much, so a reconnect storm cannot grow the
# heap without bound.
_SLACK = 1024


class IdleWatch(Generic[T]):
    """Items (held weakly) by deadline, soonest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[T]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, item: T, deadline: float) -> None:
        """Expire ``item`` at ``deadline`` unless its deadline moves."""
        heapq.heappush(self._heap, (deadline, next(self._order), weakref.ref(item)))

    def next_deadline(self) -> float | None:
        """The earliest deadline filed, if any (it may since have moved)."""
        return self._heap[0][0] if self._heap else None

    def expired(self, now: float, deadline_of: Callable[[T], float | None]) -> list[T]:
        """The items whose current deadline (``deadline_of``; None: no longer
        watched) is before ``now``; the others looked at are filed again."""
        found: list[T] = []
        while self._heap and self._heap[0][0] < now:
            _, _, ref = heapq.heappop(self._heap)
            item = ref()
            deadline = deadline_of(item) if item is not None else None
            if item is None or deadline is None:
                continue
            if deadline < now:
                found.append(item)
            else:
                self.watch(item, deadline)
        return found

    def prune(self, alive: int, is_watched: Callable[[T], bool]) -> None:
        """Drop the entries of items no longer watched, once there are more
        than ``alive`` + a slack of them."""
        if len(self._heap) <= alive + _SLACK:
            return
        self._heap = [entry for entry in self._heap
                      if (item := entry[2]()) is not None and is_watched(item)]
        heapq.heapify(self._heap)
