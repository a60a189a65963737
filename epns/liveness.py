"""When an agent pings, and when it calls a silent path dead, sans-IO.

A NAT or firewall that forgets an idle flow does not say so: the agent's
packets vanish, and a connection that looks open is deaf. paho alone checks
its keep-alive only when driven, pings up to a check interval late, and waits
a whole keep-alive more for the PINGRESP. ``Liveness`` decides instead, for
one connection, from three facts the driver reports: when the agent last
sent, when it last heard anything from the broker, and when a ping went out.

- The agent pings when a keep-alive has passed since it last sent or heard
  (MQTT 3.1.1 3.1.2.10: the client must send within the keep-alive).
- Any byte from the broker after a ping answers it. Nothing within
  ``answer_within`` means the path is dead: the driver closes the connection
  and the agent reconnects.
- So a connection is never believed past ``deaf_bound`` seconds after the
  last byte heard: keep-alive plus ``answer_within``. ``epns-agent status``
  uses the same bound.

The caller passes monotonic time; nothing here sleeps or touches a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Liveness", "Step", "answer_timeout"]

# A PINGRESP is one small packet: a broker that does not answer within this
# is not slow, it is unreachable. Bounded so that short keep-alives still
# allow a slow path, and long ones do not leave the agent deaf for minutes.
MIN_ANSWER = 5.0
MAX_ANSWER = 30.0


def answer_timeout(keepalive: float) -> float:
    """Seconds a ping may wait for an answer: half the keep-alive, within
    ``MIN_ANSWER``..``MAX_ANSWER``."""
    return min(MAX_ANSWER, max(MIN_ANSWER, keepalive / 2))


class Step(StrEnum):
    """What the driver does at a check."""

    WAIT = "wait"
    PING = "ping"
    DEAD = "dead"


@dataclass
class Liveness:
    """The keep-alive of one connection (module docstring). ``keepalive`` is
    how often it pings: the MQTT keep-alive, or the shorter interval the
    agent learnt its path needs (``epns.heartbeat``); it may change."""

    keepalive: float
    now: float

    def __post_init__(self) -> None:
        self.last_sent = self.now
        self.last_heard = self.now
        self.ping_sent: float | None = None
        # How long the path had been silent when the ping went out, and
        # whether it was a probe (``probe``) rather than the schedule's.
        self.ping_idle = 0.0
        self.probing = False

    @property
    def answer_within(self) -> float:
        """Seconds the ping out may wait for an answer."""
        return answer_timeout(self.keepalive)

    @property
    def deaf_bound(self) -> float:
        """The longest the agent may go without hearing from the broker while
        it holds the connection to be alive."""
        return self.keepalive + self.answer_within

    def sent(self, now: float) -> None:
        """The agent sent a packet."""
        self.last_sent = max(self.last_sent, now)

    def heard(self, now: float) -> float | None:
        """Bytes arrived from the broker: the path answers. Returns how long
        the path had been silent before the ping they answer, if they answer one."""
        self.last_heard = max(self.last_heard, now)
        if self.ping_sent is not None and now >= self.ping_sent:
            self.ping_sent = None
            return self.ping_idle
        return None

    def due(self) -> float:
        """When the next check is due."""
        if self.ping_sent is not None:
            return self.ping_sent + self.answer_within
        return min(self.last_sent, self.last_heard) + self.keepalive

    def probe(self, now: float) -> bool:
        """Ping now, whatever the schedule (the network changed, the machine
        woke up); False when a ping is out already."""
        if self.ping_sent is not None:
            return False
        self.ping_sent = self.last_sent = now
        self.ping_idle = now - self.last_heard
        self.probing = True
        return True

    def check(self, now: float) -> Step:
        """What to do at ``now``; a PING is recorded as sent."""
        if self.ping_sent is not None:
            return Step.DEAD if now >= self.ping_sent + self.answer_within else Step.WAIT
        if now < self.due():
            return Step.WAIT
        self.ping_sent = now
        self.last_sent = now
        self.ping_idle = now - self.last_heard
        self.probing = False
        return Step.PING
