"""The longest idle interval a path survives, learnt by probing upward, sans-IO.

NATs and firewalls forget idle flows, some after 60 s. A keep-alive longer
than that leaves the agent deaf until its next ping finds the flow gone; a
short one everywhere costs every fleet the wire of the worst network. Mobile
push clients solve this by learning their heartbeat per network, and so does
the agent:

- it starts pinging at ``start`` (45 s by default: under the 60 s the
  strictest middleboxes measured here keep an idle flow), or at what it
  learnt on this route and network before;
- after ``RAISE_AFTER`` answered pings at an interval it tries one
  ``RAISE_FACTOR`` longer, up to ``ceiling`` (the configured keep-alive, or
  the server's hint): on a path that allows it, the agent is back at the
  keep-alive's wire cost within about half an hour;
- when a ping after an idle interval goes unanswered (the flow was forgotten,
  and the connection is given up), it falls back to the longest interval
  that was answered and stays there (``settled``) until ``RELEARN_AFTER``
  has passed: networks change.

MQTT's own keep-alive (the CONNECT field the broker enforces) stays the
configured one; the learnt interval is only how often the agent pings within
it. ``Heartbeat`` is one route-and-network's record; the driver keeps one per
``network_key`` in the agent's state directory. The caller passes the clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Heartbeat", "network_key"]

RAISE_AFTER = 3
RAISE_FACTOR = 1.5
# Below this a ping every few seconds would be the wire cost of a chat.
MIN_INTERVAL = 15.0
RELEARN_AFTER = 24 * 3600.0
# A ping counts toward a raise when the path had been silent this share of
# the interval: traffic in between would have refreshed the middlebox.
FULL_SILENCE = 0.9


def _clamp(interval: float, ceiling: float) -> float:
    """``interval`` no shorter than ``MIN_INTERVAL`` and never above the
    keep-alive ``ceiling`` (which wins when it is itself shorter)."""
    return min(ceiling, max(MIN_INTERVAL, interval))


def network_key(route: str, addresses: frozenset[str]) -> str:
    """What identifies "this path": the route, and the machine's addresses
    (another Wi-Fi or a VPN gives other ones)."""
    return f"{route}|{','.join(sorted(addresses))}"


@dataclass
class Heartbeat:
    """The learnt ping interval of one route on one network (module docstring)."""

    interval: float
    ceiling: float
    proven: float = 0.0
    answered_at_interval: int = 0
    settled_at: float | None = None

    @classmethod
    def start(cls, start: float, ceiling: float) -> Heartbeat:
        """A fresh record: ``start``, never above ``ceiling``."""
        return cls(interval=_clamp(start, ceiling), ceiling=ceiling)

    def within(self, ceiling: float, now: float) -> Heartbeat:
        """This record under a (possibly new) ``ceiling``; a settled record
        starts learning again once ``RELEARN_AFTER`` has passed."""
        self.ceiling = ceiling
        self.interval = _clamp(self.interval, ceiling)
        if self.settled_at is not None and now - self.settled_at >= RELEARN_AFTER:
            self.settled_at = None
            self.answered_at_interval = 0
        return self

    def answered(self, idle: float) -> bool:
        """A ping after ``idle`` seconds of silence was answered; True when
        the interval changed (worth saving). Only a ping after (nearly) the
        whole interval of silence shows the path keeps a flow that long."""
        self.proven = max(self.proven, min(idle, self.interval))
        if self.settled_at is not None or self.interval >= self.ceiling:
            return False
        if idle < self.interval * FULL_SILENCE:
            return False
        self.answered_at_interval += 1
        if self.answered_at_interval < RAISE_AFTER:
            return False
        self.interval = min(self.ceiling, self.interval * RAISE_FACTOR)
        self.answered_at_interval = 0
        return True

    def lost(self, idle: float, now: float) -> None:
        """A ping after ``idle`` seconds of silence went unanswered: the path
        forgets flows sooner. Fall back to what was answered, and settle."""
        fallback = self.proven if 0 < self.proven < idle else idle / RAISE_FACTOR
        self.interval = _clamp(fallback, self.ceiling)
        self.answered_at_interval = 0
        self.settled_at = now

    def to_dict(self) -> dict[str, Any]:
        """For the state file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, start: float, ceiling: float) -> Heartbeat:
        """A record from the state file; a fresh one when it is unreadable."""
        try:
            return cls(interval=float(data["interval"]), ceiling=float(data["ceiling"]),
                       proven=float(data.get("proven", 0.0)),
                       answered_at_interval=int(data.get("answered_at_interval", 0)),
                       settled_at=(None if data.get("settled_at") is None
                                   else float(data["settled_at"])))
        except (KeyError, TypeError, ValueError):
            return cls.start(start, ceiling)
