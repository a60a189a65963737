"""The server-wide cap on wake-ups and magic packets, sans-IO (docs/campaigns.md).

One budget of ``limit`` sends per ``interval`` seconds, a sliding window: a
send counts until ``interval`` seconds after it was made. A send is one
wake-up for one agent, or one Wake-on-LAN request for one machine (its
relays' packets and the server's own count as that one request): both make a
machine start working and, soon after, sync with the server, which is the
load the cap is for. 1E WakeUp's "Maximum Wakeups per polling interval"
(1,000 per 30 s polling interval by default) caps the machines it wakes, each
by magic packets; epns wakes a machine either way, so one budget covers both,
and a machine woken by WoL then pushed costs two sends. Unlike 1E's count per
polling round, the window slides: never more than ``limit`` in any interval.

The server keeps no counter: the sends of the last interval are read back
from the rows that record them (wake-ups, Wake-on-LAN requests), so the
budget is the same after a restart and on every replica. What goes over the
cap waits (``admit``); nothing is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Admission", "Cap", "admit", "eta"]


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` sends in any ``interval`` seconds."""

    limit: int
    interval: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.interval <= 0:
            raise ValueError("a cap needs a limit of at least 1 and a positive interval")

    def text(self) -> str:
        """``1,000/30 s``."""
        return f"{self.limit:,}/{self.interval:g} s"


@dataclass(frozen=True)
class Admission:
    """How many of the wanted sends may go now, and when the next slot frees
    (None when all were granted)."""

    granted: int
    next_at: float | None


def _window(cap: Cap, sends: Iterable[float], now: float) -> list[float]:
    """The sends that still count at ``now``, oldest first."""
    return sorted(t for t in sends if now - cap.interval < t <= now)


def admit(cap: Cap, sends: Iterable[float], now: float, wanted: int) -> Admission:
    """Of ``wanted`` sends, how many fit now beside ``sends`` (the times of
    earlier ones; older than the interval are ignored)."""
    counted = _window(cap, sends, now)
    granted = max(0, min(wanted, cap.limit - len(counted)))
    if granted >= wanted:
        return Admission(granted, None)
    # After the grant the window is full: the next slot frees when its oldest send ages out.
    held = counted + [now] * granted
    return Admission(granted, held[len(held) - cap.limit] + cap.interval)


def eta(cap: Cap, sends: Iterable[float], now: float, queued: int) -> float:
    """When the last of ``queued`` waiting sends can go, if nothing else uses
    the budget: each send waits for the one ``limit`` places before it to age out."""
    window: deque[float] = deque(_window(cap, sends, now))
    last = now
    for _ in range(queued):
        if len(window) >= cap.limit:
            last = max(now, window[len(window) - cap.limit] + cap.interval)
        else:
            last = now
        window.append(last)
        if len(window) > cap.limit:
            window.popleft()
    return last
