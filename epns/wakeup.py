"""The delivery contract of a wake-up, sans-IO.

A wake-up requested at T for agent A is *satisfied* when A completes a sync
that started after T. Each target walks one way::

    requested ──ack──> delivered ──sync started after T──> satisfied
        │                  │
        ├──────────────────┴──TTL ran out──> expired
        └──────────────────┴──an admin cancelled it──> cancelled

Satisfied, expired and cancelled are final: nothing moves a target out of
them. A cancelled target stays cancelled when its command reaches the agent
later (the broker kept it for an offline agent) and when the agent then
syncs: that sync satisfies only what is still pending, so the cancelled
request is never counted as met.

A sync may satisfy a target that was never acked (the ack was lost with a
broker restart, or the agent synced on its interval): satisfied implies
delivered. Agents and server have different clocks, so the start of a sync is
put on the server's clock before it is compared with T (``server_time``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PENDING_STATES",
    "ClockOffset",
    "WakeState",
    "best_offset",
    "clock_offset",
    "collapse_into",
    "satisfies",
    "server_time",
]


class WakeState(StrEnum):
    """Where one target of a wake-up stands."""

    REQUESTED = "requested"
    DELIVERED = "delivered"
    SATISFIED = "satisfied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def pending(self) -> bool:
        """True while the target can still be satisfied (or cancelled)."""
        return self in (WakeState.REQUESTED, WakeState.DELIVERED)


PENDING_STATES = (WakeState.REQUESTED.value, WakeState.DELIVERED.value)


@dataclass(frozen=True)
class ClockOffset:
    """How far the server's clock is ahead of an agent's (``offset``), as read
    from one event: its arrival minus its own timestamp, at ``seen_at``."""

    offset: float
    seen_at: float


def clock_offset(*, agent_now: float, server_now: float) -> ClockOffset:
    """The offset one event shows: the clocks' skew plus the event's transit."""
    return ClockOffset(offset=server_now - agent_now, seen_at=server_now)


def best_offset(kept: ClockOffset | None, sample: ClockOffset, *,
                max_age: float = 600.0) -> ClockOffset:
    """The offset to trust: the smallest one seen within ``max_age``.

    Transit only ever adds to an offset, so a message held up on its way (a
    broker failing over, a congested link) reads as if the agent's clock were
    behind, and its times land late on the server's clock: a sync that
    started before a request would seem to start after it. The smallest
    recent reading is the one with the least transit in it."""
    if kept is None or sample.seen_at - kept.seen_at > max_age or sample.offset <= kept.offset:
        return sample
    return kept


def server_time(agent_time: float, offset: ClockOffset) -> float:
    """``agent_time`` on the server's clock. Whatever transit is left in the
    offset makes it late, which counts a sync that may have started before a
    request: keep the offset small with ``best_offset``."""
    return agent_time + offset.offset


def satisfies(*, sync_started_at: float, requested_at: float) -> bool:
    """True when a sync that started at ``sync_started_at`` (server clock)
    answers a request made at ``requested_at``."""
    return sync_started_at > requested_at


def collapse_into(pending_command_expires_at: float | None, *, new_expires_at: float,
                  now: float, margin: float = 30.0) -> bool:
    """True when a new request may ride on the agent's pending, not yet acked,
    command instead of a new one: that command must outlive the new request,
    less a margin, or the agent would drop it as expired before it arrives."""
    if pending_command_expires_at is None:
        return False
    return pending_command_expires_at >= min(new_expires_at, now + margin)
