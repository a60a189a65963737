"""Noticing that the ground moved under a connection, sans-IO.

Two events make an open connection suspect long before its keep-alive would
tell: the machine's addresses changed (another Wi-Fi, a VPN up or down, a
new DHCP lease), or the machine slept (the wall clock jumped ahead of the
monotonic one, which stands still during suspend on Linux). After either, the
agent checks its connection at once (a ping that must be answered within the
liveness answer timeout) or, when it has none, reconnects without waiting
for its backoff.

``Watch`` keeps the last look; the driver takes a new one every
``CHECK_INTERVAL`` seconds and asks what changed. Nothing here reads an
interface or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CHECK_INTERVAL", "Change", "Look", "Watch"]

# How often the agent looks: a change is noticed within this.
CHECK_INTERVAL = 10.0
# How far the wall clock may run ahead of the monotonic one between two looks
# before it counts as a sleep: NTP slews, it does not jump seconds.
SLEEP_TOLERANCE = 5.0


class Change(StrEnum):
    """What a look found."""

    NONE = "none"
    ADDRESSES = "addresses"
    RESUMED = "resumed"


@dataclass(frozen=True, slots=True)
class Look:
    """One look at the machine: its addresses and both clocks."""

    addresses: frozenset[str]
    wall: float
    monotonic: float


class Watch:
    """The last look, and what the next one changes (module docstring)."""

    def __init__(self, first: Look) -> None:
        self._last = first

    def look(self, now: Look) -> Change:
        """Compare ``now`` with the last look, and keep it."""
        last, self._last = self._last, now
        ahead = (now.wall - last.wall) - (now.monotonic - last.monotonic)
        if ahead > SLEEP_TOLERANCE:
            return Change.RESUMED
        if now.addresses != last.addresses:
            return Change.ADDRESSES
        return Change.NONE
