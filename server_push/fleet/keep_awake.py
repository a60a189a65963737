"""Keep one agent awake per subnet (``epns.keep_awake``), when the
Wake-on-LAN settings ask for it (``keep_awake``).

Each agent's record is its row's ``keep_awake`` JSON::

    {"subnets": [...], "sent": true, "sent_at": 1.0,
     "holding": true, "detail": "", "reported_at": 2.0}

``subnets`` it was elected to keep; ``sent``/``sent_at`` the last hold
(true) or release (false) the server sent, a signed ``keep_awake`` command
through the outbox; ``holding``/``detail``/``reported_at`` what the agent last
reported (a ``keep_awake`` event): holding, or why it could not (logind
unreachable, not allowed by its config).

The election runs after presence changes (``poke``, coalesced) and every
``RECHECK`` seconds (an agent that went stale sends nothing), as part of the
server's shared work (one replica in a cluster). Turning the setting off
releases every holder.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import topics
from epns.envelope import Command, CommandType, target_agent
from epns.keep_awake import (
    Member,
    SubnetState,
    elect_keepers,
    instruction,
    lan_subnets,
    subnet_states,
    wanted_holds,
)
from epns.logs import event
from server_push.fleet.bus import Bus
from server_push.fleet.registry import Registry, reported_interfaces
from server_push.link.outbox import Outbox
from server_push.store.history import remember
from server_push.store.models import Agent
from server_push.store.settings_store import SettingsStore

log = logging.getLogger(__name__)

# Seconds between elections with no presence news (stale agents, expiry).
RECHECK = 60.0
# Presence news is gathered this long before one election runs for all of it.
COALESCE = 0.5
# A hold or release the agent does not get within this long is not wanted any
# more: the next election decides again.
COMMAND_TTL = 300.0


@dataclass(frozen=True, slots=True)
class SubnetView:
    """One subnet for the API and the console: its agents, its keeper (the
    agent that holds sleep off for it) and what the admin must know."""

    subnet: str
    agents: int
    online: int
    eligible: int
    keeper: str | None
    keeper_holding: bool | None
    keeper_detail: str
    warning: str | None


class KeepAwake:
    """Elects the keepers and tells agents to hold or release."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, bus: Bus,
                 registry: Registry, config: SettingsStore) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._bus = bus
        self._registry = registry
        self._config = config
        self._news = asyncio.Event()

    def poke(self) -> None:
        """Presence changed somewhere: elect again soon."""
        self._news.set()

    async def run(self) -> None:
        """Elect after news (coalesced) or every RECHECK seconds, until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._news.wait(), RECHECK)
                await asyncio.sleep(COALESCE)
            except TimeoutError:
                pass
            self._news.clear()
            try:
                await self.reconcile(time.time())
            except Exception as exc:  # the loop must outlive a bad round
                event(log, "keep_awake_failed", logging.ERROR, error=repr(exc))

    async def reconcile(self, now: float) -> int:
        """Elect, record, and send what differs; returns how many commands went."""
        enabled = (await self._config.wol()).keep_awake
        staged: list[str] = []
        async with self._sessions() as session, session.begin():
            rows = await self._rows(session)
            members = {row.id: self._member(row, now) for row in rows}
            if enabled:
                current = {subnet: row.id for row in rows
                           for subnet in _record(row).get("subnets", [])}
                holds = wanted_holds(elect_keepers(members.values(), current))
            else:
                holds = {}
            for row in rows:
                staged.extend(self._settle(session, row, members[row.id],
                                           holds.get(row.id, ()), now))
        if staged:
            await self._outbox.send(staged)
            self._bus.publish({"kind": "wol_subnets"})
        return len(staged)

    def _settle(self, session: AsyncSession, row: Agent, member: Member,
                subnets: tuple[str, ...], now: float) -> list[str]:
        """Record the agent's subnets; stage a hold or release if it needs one."""
        record = _record(row)
        before = list(record.get("subnets", []))
        if before != list(subnets):
            record["subnets"] = list(subnets)
            remember(session, row.id, now, "keep_awake_elected" if subnets
                     else "keep_awake_released",
                     ", ".join(subnets or before))
        send = None if not member.online else instruction(
            want=bool(subnets), holding=record.get("holding"), sent=record.get("sent"),
            sent_at=record.get("sent_at"), online_since=row.presence_at)
        staged = []
        if send is not None:
            command = Command(CommandType.KEEP_AWAKE, target_agent(row.id), now,
                              now + COMMAND_TTL, {"hold": send, "subnets": list(subnets)},
                              id=uuid.uuid4().hex)
            self._outbox.stage(session, command, topics.agent_cmd(row.id))
            record.update(sent=send, sent_at=now)
            staged.append(command.id)
            event(log, "keep_awake_sent", agent=row.id, hold=send,
                  subnets=",".join(subnets) or "none")
        if record != _record(row):
            row.keep_awake = record  # a new dict: JSON columns see no change inside one
        return staged

    async def on_report(self, agent_id: str, body: dict[str, Any], now: float) -> None:
        """The agent said whether it holds sleep off (and why not)."""
        async with self._sessions() as session, session.begin():
            row = await session.get(Agent, agent_id)
            if row is None:
                return
            record = _record(row)
            changed = (record.get("holding") != body["holding"]
                       or record.get("detail", "") != body["detail"])
            record.update(holding=body["holding"], detail=body["detail"], reported_at=now)
            row.keep_awake = record
            if changed:
                remember(session, agent_id, now, "keep_awake_holding" if body["holding"]
                         else "keep_awake_not_holding", body["detail"])
        event(log, "keep_awake_reported", logging.INFO if body["holding"] or not body["detail"]
              else logging.WARNING, agent=agent_id, holding=body["holding"],
              detail=body["detail"])
        self._bus.publish({"kind": "wol_subnets"})

    async def subnets(self, now: float) -> tuple[bool, list[SubnetView]]:
        """Whether keep-awake is on, and every subnet agents report."""
        enabled = (await self._config.wol()).keep_awake
        async with self._sessions() as session:
            rows = await self._rows(session)
        members = {row.id: self._member(row, now) for row in rows}
        keepers: dict[str, str | None] = {}
        if enabled:
            keepers = {subnet: row.id for row in rows
                       for subnet in _record(row).get("subnets", [])}
        records = {row.id: _record(row) for row in rows}
        return enabled, [_subnet_view(state, records, enabled)
                         for state in subnet_states(members.values(), keepers)]

    async def _rows(self, session: AsyncSession) -> list[Agent]:
        return list((await session.scalars(select(Agent).where(
            Agent.revoked_at.is_(None), Agent.retired_at.is_(None))
            .order_by(Agent.id))).all())

    def _member(self, row: Agent, now: float) -> Member:
        record = _record(row)
        # Failed: its last word, after the last hold, was that it cannot.
        failed = (record.get("holding") is False and bool(record.get("detail"))
                  and record.get("sent") is True)
        return Member(row.id, self._registry.view(row, now).presence == "online",
                      row.keep_awake_allowed, lan_subnets(reported_interfaces(row)), failed)


def _record(row: Agent) -> dict[str, Any]:
    return dict(row.keep_awake or {})


def _subnet_view(state: SubnetState, records: dict[str, dict[str, Any]],
                 enabled: bool) -> SubnetView:
    record = records.get(state.keeper or "", {})
    holding = record.get("holding") if state.keeper else None
    detail = str(record.get("detail", "")) if state.keeper else ""
    return SubnetView(state.subnet, state.agents, state.online, state.eligible, state.keeper,
                      holding, detail, _warning(state, enabled, holding, detail))


def _warning(state: SubnetState, enabled: bool, holding: bool | None,
             detail: str) -> str | None:
    """What the admin must know about one subnet, or None."""
    if not state.online:
        return (f"no relay: every agent in {state.subnet} is asleep or offline "
                f"({state.agents} known); Wake-on-LAN reaches it only through the server's "
                "own addresses")
    if not enabled:
        return None
    if state.keeper is None:
        return (f"no agent in {state.subnet} allows keep-awake (wol.allow_keep_awake in its "
                "config): a relay exists only while one of them is awake")
    if holding is False and detail:
        return f"{state.keeper} could not hold off sleep: {detail}"
    return None
