"""The delivery contract of a wake-up, sans-IO.

A wake-up requested at T for agent A is *satisfied* when A completes a sync
that started after T. Each target walks one way::

    requested ──ack──> delivered ──sync started after T──> satisfied
        │                  │
        └──────────────────┴──TTL ran out──> expired

A sync may satisfy a target that was never acked (the ack was lost with a
broker restart, or the agent synced on its interval): satisfied implies
delivered. Agents and server have different clocks, so the start of a sync is
put on the server's clock before it is compared with T (``server_time``).
"""

from __future__ import annotations

from enum import StrEnum


class WakeState(StrEnum):
    """Where one target of a wake-up stands."""

    REQUESTED = "requested"
    DELIVERED = "delivered"
    SATISFIED = "satisfied"
    EXPIRED = "expired"

    @property
    def pending(self) -> bool:
        """True while the target can still be satisfied."""
        return self in (WakeState.REQUESTED, WakeState.DELIVERED)


PENDING_STATES = (WakeState.REQUESTED.value, WakeState.DELIVERED.value)


def server_time(agent_time: float, *, agent_now: float, server_now: float) -> float:
    """``agent_time`` on the server's clock, given one reading of both clocks
    (an event's own timestamp and the moment the server received it). The
    event's transit time makes the result a little late, never early, which
    errs towards not counting a sync that may have started before the request."""
    return agent_time + (server_now - agent_now)


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
