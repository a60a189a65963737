"""The agent registry: enrolled agents, and what their presence and syncs say.

Presence comes from the retained birth and last-will messages, so subscribing
again after a server restart rebuilds it. The state shown is:

- ``online``: the last presence said online and the agent was heard from
  within ``presence.stale_after``;
- ``stale``: it said online, but has not been heard from since, or the server
  itself has lost the broker and cannot know;
- ``offline``: its last-will (or a clean goodbye) said offline;
- ``unknown``: enrolled, never seen.

An offline presence is stamped with the server's clock when it arrives: a
last will is written when its connection is made, so its own time is the
connect time, not when the agent went away.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.envelope import Interface, Presence, PresenceState
from epns.errors import NotFound, PayloadTooLarge
from epns.logs import event
from epns.server_config import PresenceSettings
from server_push.fleet.agent_query import (
    PRESENCES,
    AgentFilter,
    Liveness,
    SortKey,
    counts_query,
    page_query,
)
from server_push.fleet.bus import Bus
from server_push.store.history import remember, remember_lines
from server_push.store.models import Agent, AgentEvent

log = logging.getLogger(__name__)

# Agents that the broker let in without an enrolment here (a certificate made
# with epns-certs, say) are registered on first sight: the fleet CA vouches.
DISCOVERED = "discovered"
# A will's time precedes its own connection's birth by the connect steps (at
# most their timeouts). A will older than that, before the birth the registry
# holds, is from a connection that birth replaced (Mosquitto publishes a
# taken-over connection's will after the new birth): it is ignored.
WILL_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class AgentView:
    """An agent as the API and the console show it."""

    id: str
    groups: list[str]
    auth: str
    created_at: float
    revoked: bool
    # When it was retired (DELETE /api/v1/agents/{id}); None while in service.
    retired_at: float | None
    presence: str
    presence_at: float | None
    last_seen: float | None
    route: str | None
    version: str | None
    hostname: str | None
    interfaces: list[dict[str, Any]]
    last_sync_at: float | None
    last_sync_result: str | None
    last_sync_reason: str | None
    # The current identity's expiry (None: not known yet) and its renewals.
    identity_expires_at: float | None
    renewed_at: float | None
    renewals: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return {name: getattr(self, name) for name in self.__slots__}


def is_news(agent: Agent, presence: Presence) -> bool:
    """Whether ``presence`` may change what the registry holds for ``agent``."""
    online = agent.presence == PresenceState.ONLINE.value
    if presence.state is PresenceState.OFFLINE:
        if agent.presence == PresenceState.OFFLINE.value:
            return False  # the same will again, replayed after a resubscribe
        return (not online or agent.presence_at is None
                or presence.at >= agent.presence_at - WILL_WINDOW)
    # An older birth than the one held is a replay after a resubscribe.
    return not online or agent.presence_at is None or presence.at >= agent.presence_at


def presence_of(agent: Agent, *, now: float, stale_after: float, link_up: bool) -> str:
    """The presence shown for ``agent``, by the rules in this module's docstring."""
    if agent.presence != PresenceState.ONLINE.value:
        return agent.presence
    if not link_up:
        return "stale"
    heard = agent.last_seen or agent.presence_at or 0.0
    return "stale" if now - heard > stale_after else "online"


def reported_interfaces(agent: Agent) -> list[Interface]:
    """The interfaces of the agent's last presence, as stored; a malformed
    entry is skipped (WoL relays and keep-awake read them)."""
    found = []
    for entry in agent.interfaces or []:
        try:
            found.append(Interface(str(entry["address"]), int(entry["prefix"]),
                                   entry.get("mac")))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return found


def _check_inventory(agent_id: str, before: Mapping[str, Any], inventory: Mapping[str, Any],
                     budget: int | None) -> None:
    """PayloadTooLarge when ``inventory`` is over ``budget`` and larger than
    ``before``: an agent already over (a lowered budget) may still shrink it."""
    if budget is None:
        return
    size = _size(inventory)
    if size > budget and size > _size(before):
        raise PayloadTooLarge(
            f"agent {agent_id!r}: these changes would make its inventory {size} bytes, over "
            f"its budget of {budget} (budgets.inventory_bytes); send less, or replace keys "
            "instead of adding new ones", code="inventory_over_budget")


def _size(inventory: Mapping[str, Any]) -> int:
    return len(json.dumps(inventory, separators=(",", ":")).encode())


class Registry:
    """Reads and writes agents' presence, last seen and last sync."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus,
                 settings: PresenceSettings) -> None:
        self._sessions = sessions
        self._bus = bus
        self._settings = settings
        self.link_up = False

    def view(self, agent: Agent, now: float) -> AgentView:
        """The API view of one row."""
        return AgentView(
            agent.id, list(agent.groups or []), agent.auth, agent.created_at,
            agent.revoked_at is not None, agent.retired_at,
            presence_of(agent, now=now, stale_after=self._settings.stale_after,
                        link_up=self.link_up),
            agent.presence_at, agent.last_seen, agent.route, agent.version, agent.hostname,
            list(agent.interfaces or []), agent.last_sync_at, agent.last_sync_result,
            agent.last_sync_reason, agent.identity_expires_at, agent.renewed_at,
            agent.renewals or 0)

    async def get(self, agent_id: str, now: float) -> AgentView:
        """One agent; NotFound when it is not registered."""
        async with self._sessions() as session:
            agent = await session.get(Agent, agent_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
        return self.view(agent, now)

    async def all(self, now: float) -> list[AgentView]:
        """Every agent in service (not retired), by id."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(Agent).where(Agent.retired_at.is_(None))
                                          .order_by(Agent.id))).all()
        return [self.view(row, now) for row in rows]

    def liveness(self, now: float) -> Liveness:
        """What the shown presence depends on at ``now``, besides each row."""
        return Liveness(now, self._settings.stale_after, self.link_up)

    async def find(self, wanted: AgentFilter, sort: tuple[SortKey, ...], now: float, *,
                   limit: int | None, offset: int) -> list[AgentView]:
        """One page of the agents ``wanted`` names, in ``sort`` order."""
        async with self._sessions() as session:
            dialect = session.get_bind().dialect.name
            rows = (await session.scalars(page_query(
                wanted, sort, self.liveness(now), dialect, limit=limit, offset=offset))).all()
        return [self.view(row, now) for row in rows]

    async def count(self, wanted: AgentFilter, now: float) -> dict[str, Any]:
        """``{"total": n, "presence": {"online": n, ...}}`` of the agents ``wanted`` names."""
        async with self._sessions() as session:
            dialect = session.get_bind().dialect.name
            row = (await session.execute(counts_query(wanted, self.liveness(now),
                                                      dialect))).one()
        return {"total": row[0], "presence": dict(zip(PRESENCES, row[1:], strict=True))}

    async def groups(self) -> dict[str, int]:
        """Every group name an agent in service holds, with its member count,
        by name (the console suggests them when an admin edits groups)."""
        async with self._sessions() as session:
            lists = (await session.scalars(select(Agent.groups)
                                           .where(Agent.retired_at.is_(None)))).all()
        members = Counter(name for names in lists for name in names or ())
        return dict(sorted(members.items()))

    async def history(self, agent_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The agent's newest history lines first."""
        async with self._sessions() as session:
            rows = (await session.scalars(
                select(AgentEvent).where(AgentEvent.agent_id == agent_id)
                .order_by(AgentEvent.at.desc(), AgentEvent.id.desc()).limit(limit))).all()
        return [{"at": row.at, "kind": row.kind, "detail": row.detail} for row in rows]

    async def _row(self, session: AsyncSession, agent_id: str, now: float) -> Agent:
        agent = await session.get(Agent, agent_id)
        if agent is None:
            await self._discover(agent_id, now)
            agent = await session.get(Agent, agent_id, populate_existing=True)
            assert agent is not None  # rows are never deleted (retire keeps them)
        return agent

    async def _discover(self, agent_id: str, now: float) -> None:
        """A row for an agent first seen on the broker, in a transaction of
        its own: its birth message and its first sync often arrive together,
        and the one that loses the race to create the row must still be
        applied, not fail on the primary key (seen in CI under load: the
        presence was lost and the agent never showed online)."""
        try:
            async with self._sessions() as session, session.begin():
                session.add(Agent(id=agent_id, groups=[], auth=DISCOVERED, created_at=now,
                                  interfaces=[], inventory={}, presence="unknown"))
                remember(session, agent_id, now, "discovered", "first seen on the broker")
        except IntegrityError:
            return  # created by the other one meanwhile
        event(log, "agent_discovered", agent=agent_id)

    async def on_presence(self, agent_id: str, presence: Presence, now: float) -> bool:
        """Record a birth or last-will; True when the agent came online.
        Core statements on the two columns the rules read (every agent back
        after a broker restart comes through here: a whole row, inventory
        and all, as an ORM object each was most of the cost)."""
        wanted = select(Agent.presence, Agent.presence_at).where(Agent.id == agent_id)
        async with self._sessions() as session, session.begin():
            row = (await session.execute(wanted)).first()
            if row is None:
                await self._discover(agent_id, now)
                row = (await session.execute(wanted)).one()
            held = cast(Agent, row)
            if not is_news(held, presence):
                return False
            came_online = (presence.state is PresenceState.ONLINE
                           and (held.presence != PresenceState.ONLINE.value
                                or presence.at != held.presence_at))
            changed = held.presence != presence.state.value or presence.at != held.presence_at
            values: dict[str, Any] = {
                "presence": presence.state.value,
                "presence_at": presence.at if presence.state is PresenceState.ONLINE else now}
            if presence.state is PresenceState.ONLINE:
                values.update(
                    last_seen=now, route=presence.route, version=presence.version,
                    hostname=presence.hostname,
                    interfaces=[{"address": i.address, "prefix": i.prefix, "mac": i.mac}
                                for i in presence.interfaces],
                    keep_awake_allowed=presence.keep_awake)
            await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))
            if changed:
                detail = f"route {presence.route}" if presence.route else ""
                await remember_lines(session, [(agent_id, now, presence.state.value, detail)])
        if changed:
            self._bus.publish({"kind": "agent", "id": agent_id})
        return came_online

    async def touch(self, agent_id: str, now: float) -> None:
        """The agent was heard from: one UPDATE, no row loaded (each ack of
        a wake-all comes through here)."""
        async with self._sessions() as session, session.begin():
            found = await session.execute(update(Agent).where(Agent.id == agent_id)
                                          .values(last_seen=now))
        if not found.rowcount:  # type: ignore[attr-defined]
            await self._discover(agent_id, now)
            async with self._sessions() as session, session.begin():
                await session.execute(update(Agent).where(Agent.id == agent_id)
                                      .values(last_seen=now))

    @staticmethod
    async def touch_in(session: AsyncSession, agent_id: str, now: float) -> bool:
        """``touch`` inside the caller's transaction; False when the agent
        has no row (the caller then ``touch``es it after its commit, which
        registers it: inside, SQLite would wait for the caller's own lock)."""
        found = await session.execute(update(Agent).where(Agent.id == agent_id)
                                      .values(last_seen=now))
        return bool(found.rowcount)  # type: ignore[attr-defined]

    async def on_sync(self, agent_id: str, *, ok: bool, detail: str, reason: str, at: float,
                      changes: Mapping[str, Any] | None = None,
                      inventory_budget: int | None = None,
                      identity: tuple[float, float] | None = None) -> None:
        """Record a sync in a transaction of its own (``record_sync``)."""
        async with self._sessions() as session, session.begin():
            await self.record_sync(session, agent_id, ok=ok, detail=detail, reason=reason,
                                   at=at, changes=changes, inventory_budget=inventory_budget,
                                   identity=identity)
        self.announce(agent_id)

    async def record_sync(self, session: AsyncSession, agent_id: str, *, ok: bool, detail: str,
                          reason: str, at: float, changes: Mapping[str, Any] | None = None,
                          inventory_budget: int | None = None,
                          identity: tuple[float, float] | None = None) -> None:
        """Record a sync the agent reports (or the sync endpoint saw), inside
        the caller's transaction (``Wakeups.on_sync`` joins it to the
        satisfied targets: one commit per sync); the caller ``announce``s it
        after the commit. It must be the transaction's first write: an
        agent first seen here gets its row in a transaction of its own
        (``_discover``), which on SQLite would wait for this one's lock.
        ``changes`` are merged into the agent's inventory; PayloadTooLarge,
        with nothing written, when that would take the inventory past
        ``inventory_budget`` bytes of JSON. ``identity`` is the (issued at,
        expires at) of the identity the sync was proven with, which the row
        then shows: the identity the agent really uses. A renewal records
        the one it issued, but an agent that could not install it (a
        directory it cannot write, a lost answer) goes on with the old one,
        and its expiry must show, not that of a certificate nobody holds.
        It also fills in rows that did not know their identity's (issued
        before renewal was tracked, or not by this server). Core statements
        (one read, one update, one insert): this runs once per agent of a
        wake-all."""
        wanted = select(Agent.inventory).where(Agent.id == agent_id)
        row = (await session.execute(wanted)).first()
        if row is None:
            await self._discover(agent_id, at)
            row = (await session.execute(wanted)).one()
        values: dict[str, Any] = {
            "last_seen": at, "last_sync_at": at, "last_sync_reason": reason,
            "last_sync_result": "ok" if ok else f"failed: {detail}"}
        if identity is not None:
            values["identity_issued_at"], values["identity_expires_at"] = identity
        if changes:
            before = row.inventory or {}
            inventory = {**before, **changes}
            _check_inventory(agent_id, before, inventory, inventory_budget)
            if inventory != before:
                values["inventory"] = inventory
        await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))
        await remember_lines(session, [(agent_id, at, "sync" if ok else "sync_failed",
                                        f"{reason}: {detail}")])

    def announce(self, agent_id: str) -> None:
        """Tell the console's event stream that the agent's row changed."""
        self._bus.publish({"kind": "agent", "id": agent_id})

    async def remember(self, agent_id: str, at: float, kind: str, detail: str) -> None:
        """Add a line to an agent's history."""
        async with self._sessions() as session, session.begin():
            await self._row(session, agent_id, at)
            remember(session, agent_id, at, kind, detail)
