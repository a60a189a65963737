"""The metrics read from the database at a scrape (``link/metrics.py``):
wake targets by state, agents by presence, the outbox, identities expiring.

Each is one query on an index or a small table, and the answer is kept
``ttl`` seconds: a storm of scrapes (several Prometheus servers, a dashboard
refreshed by many) costs the database one read per ``ttl``, and scrapes that
arrive while it runs wait for that same read instead of starting their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server_push.fleet.agents import AgentAdmin
from server_push.link.metrics import WAKE_STATES, FleetGauges
from server_push.store.models import Agent, PendingCommand, WakeTarget

__all__ = ["GAUGE_TTL", "GaugeReader"]

# Seconds a reading is served again: shorter than any sane scrape interval
# (15 s and up), long enough that a burst of scrapes is one read.
GAUGE_TTL = 5.0

PRESENCES = ("online", "stale", "offline", "unknown")


class GaugeReader:
    """Reads ``FleetGauges``, at most once per ``ttl`` seconds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], agents: AgentAdmin, *,
                 stale_after: float, link_up: Callable[[], bool], ttl: float) -> None:
        self._sessions = sessions
        self._agents = agents
        self._stale_after = stale_after
        self._link_up = link_up
        self._ttl = ttl
        self._lock = asyncio.Lock()
        self._last: FleetGauges | None = None
        # How many times the database was read, for the test of the cache.
        self.reads = 0

    async def read(self, now: float) -> FleetGauges:
        """The gauges, from the cache while it is younger than ``ttl``."""
        async with self._lock:
            if self._last is None or not 0 <= now - self._last.read_at < self._ttl:
                self._last = await self._read(now)
                self.reads += 1
            return self._last

    async def _read(self, now: float) -> FleetGauges:
        expiring, unknown = await self._agents.expiring(now)
        async with self._sessions() as session:
            # ix_wake_targets_state_expires covers it: an index-only count.
            targets = dict.fromkeys(WAKE_STATES, 0)
            for state, count in (await session.execute(
                    select(WakeTarget.state, func.count()).group_by(WakeTarget.state))).all():
                targets[state] = int(count)
            heard = func.coalesce(Agent.last_seen, Agent.presence_at, 0.0)
            fresh = heard >= now - self._stale_after
            presence = dict.fromkeys(PRESENCES, 0)
            for state, is_fresh, count in (await session.execute(
                    select(Agent.presence, fresh, func.count())
                    .where(Agent.revoked_at.is_(None))
                    .group_by(Agent.presence, fresh))).all():
                presence[self._shown(state, bool(is_fresh))] += int(count)
            pending, oldest = (await session.execute(
                select(func.count(), func.min(PendingCommand.created_at)))).one()
        return FleetGauges(wake_targets=targets, agents=presence, outbox_pending=int(pending),
                           outbox_oldest_age=0.0 if oldest is None else max(0.0, now - oldest),
                           expiring=expiring, expiry_unknown=unknown, read_at=now)

    def _shown(self, state: str, fresh: bool) -> str:
        """The presence the console shows (``registry.presence_of``)."""
        if state != "online":
            return state if state in PRESENCES else "unknown"
        return "online" if fresh and self._link_up() else "stale"
