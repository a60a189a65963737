"""Wake-ups and their delivery contract (``epns.wakeup``), kept in the database.

A request becomes one ``Wakeup`` row and one ``WakeTarget`` per agent, in the
same transaction as the signed command that carries it (``Outbox.stage``), so
an accepted request always has a command on its way. Then:

- an agent's ``ack`` marks its targets on that command delivered;
- a completed sync (sync endpoint or ``sync`` event) satisfies the agent's
  pending targets requested before the sync started;
- the sweeper expires targets whose TTL ran out;
- an admin's cancel ends the pending targets (``cancel``): their unsent
  commands leave the outbox, and a command the broker already holds for an
  offline agent still reaches it, but its ack and its sync find nothing
  pending to move (acks and syncs only ever move pending targets).

Collapse: a request for an agent that already has an un-acked wake command
rides on that command instead of sending another. If the agent turns out to
have consumed that command in a sync that started before the request (the
ack and the request crossed), the sync's ``wakes`` list says so and one fresh
command is sent for what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import topics
from epns.envelope import TARGET_ALL, Command, CommandType, target_agent, target_group
from epns.errors import BadRequest, Conflict, NotFound, RequestError
from epns.logs import event
from epns.server_config import WakeupSettings
from epns.wakeup import PENDING_STATES, WakeState, collapse_into
from server_push.fleet.agent_query import AgentFilter, conditions
from server_push.fleet.bus import Bus
from server_push.fleet.registry import Registry, presence_of
from server_push.link.metrics import ServerMetrics
from server_push.link.outbox import Outbox
from server_push.store.history import audit, remember_all, remember_lines, settle_audit
from server_push.store.models import Agent, PendingCommand, WakeTarget, Wakeup

log = logging.getLogger(__name__)

TargetKind = Literal["agents", "group", "all", "filter"]
AUDIT_ACTION = "wakeup"
CANCEL_ACTION = "wakeup_cancel"
MAX_AGENTS_PER_REQUEST = 10_000
# Syncs remembered as applied (``Wakeups.applied``): a fleet's worth.
_APPLIED_KEPT = 20_000


# expires_at - created_at gives the TTL back to within float rounding.
_TTL_TOLERANCE = 1e-3
# What the registry's presence rules read of an agent's row.
# A cancelled target, as its UPDATE returns it: agent, command, delivered_at.
_CancelledRow = Row[str, str | None, float | None]
_PRESENCE_COLUMNS = (Agent.presence, Agent.presence_at, Agent.last_seen)


class IdempotencyKeyReused(RequestError):
    """An Idempotency-Key sent again with a different body."""

    status = 422
    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class AgentMatch:
    """The agents a list filter names (``GET /api/v1/agents``'s filters),
    resolved when the request is accepted: the console's "all N matching"."""

    filter: AgentFilter
    # The filter as the caller wrote it: the wake-up's target, and what a
    # retry under the same Idempotency-Key must repeat.
    described: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WakeRequest:
    """What a caller asks for: some agents, a group, all, or those a filter matches."""

    kind: TargetKind
    agents: tuple[str, ...] = ()
    group: str | None = None
    ttl: float | None = None
    idempotency_key: str | None = None
    match: AgentMatch | None = None


@dataclass(frozen=True, slots=True)
class WakeupFilter:
    """Wake-ups wanted in a list; a tuple holds values any of which matches.
    ``created_after`` is inclusive, ``created_before`` exclusive."""

    requested_by: tuple[str, ...] = ()
    target_kinds: tuple[str, ...] = ()
    created_after: float | None = None
    created_before: float | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses."""
        where: list[ColumnElement[bool]] = []
        if self.requested_by:
            where.append(Wakeup.requested_by.in_(self.requested_by))
        if self.target_kinds:
            where.append(Wakeup.target_kind.in_(self.target_kinds))
        if self.created_after is not None:
            where.append(Wakeup.created_at >= self.created_after)
        if self.created_before is not None:
            where.append(Wakeup.created_at < self.created_before)
        return where


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target's delivery record, for the API."""

    agent_id: str
    state: str
    requested_at: float
    delivered_at: float | None
    satisfied_at: float | None
    ended_at: float | None
    # The agent's presence when the request was accepted (None: before
    # migration 0010), as shown now, and when it was last heard from.
    presence_at_request: str | None = None
    presence: str | None = None
    last_seen: float | None = None


@dataclass(frozen=True, slots=True)
class WakeupView:
    """A wake-up with its counts per state (and its targets when asked for)."""

    id: str
    created_at: float
    expires_at: float
    requested_by: str
    target_kind: str
    target: list[Any]
    counts: dict[str, int]
    targets: tuple[TargetView, ...] = ()
    cancelled_at: float | None = None
    cancelled_by: str | None = None

    @property
    def done(self) -> bool:
        """True when no target can change any more."""
        return not any(self.counts.get(state, 0) for state in PENDING_STATES)


@dataclass(frozen=True, slots=True)
class _Moved:
    """What one sync moved: the request times of the targets it delivered
    (no ack had come) and of those it satisfied, and their wake-ups."""

    delivered: tuple[float, ...]
    satisfied: tuple[float, ...]
    wakeup_ids: set[str]


class Wakeups:
    """Accepts wake-up requests and moves their targets along the contract."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, bus: Bus,
                 settings: WakeupSettings, metrics: ServerMetrics, *,
                 registry: Registry) -> None:
        self._sessions = sessions
        # Judges presence (online, stale, offline) by the registry's rules.
        self._registry = registry
        # Counted after each transaction commits: a rolled-back one moved nothing.
        self._metrics = metrics
        self._outbox = outbox
        self._bus = bus
        self._settings = settings
        # The syncs this process applied lately, by (agent, sync id): an
        # agent that syncs over HTTP reports the same sync over MQTT after it,
        # and that report can satisfy nothing the POST did not (it started
        # no later, with the same wakes), so it costs no transaction.
        self._applied: OrderedDict[tuple[str, str], None] = OrderedDict()
        # Writes the answer does not wait for, kept until they end.
        self._background: set[asyncio.Task[None]] = set()

    def applied(self, agent_id: str, sync_id: str) -> bool:
        """True when this process applied that sync already (``on_sync``)."""
        return bool(sync_id) and (agent_id, sync_id) in self._applied

    def _mark_applied(self, agent_id: str, sync_id: str) -> None:
        if not sync_id:
            return
        self._applied[(agent_id, sync_id)] = None
        if len(self._applied) > _APPLIED_KEPT:
            self._applied.popitem(last=False)

    # --- requests ------------------------------------------------------------

    async def request(self, actor: str, wanted: WakeRequest) -> tuple[WakeupView, bool]:
        """Accept ``wanted``; returns the wake-up and False when the idempotency
        key named an earlier one (nothing new is sent then)."""
        ttl = self._ttl(wanted.ttl)
        if wanted.idempotency_key is not None:
            earlier = await self._by_key(actor, wanted.idempotency_key)
            if earlier is not None:
                return self._replayed(earlier, wanted, ttl), False
        now = time.time()
        wakeup = Wakeup(id=uuid.uuid4().hex, created_at=now, expires_at=now + ttl,
                        requested_by=actor, target_kind=wanted.kind,
                        target=self._describe(wanted), idempotency_key=wanted.idempotency_key)
        try:
            async with self._sessions() as session, session.begin():
                presence = await self._resolve(session, wanted, now)
                agent_ids = list(presence)
                session.add(wakeup)
                await session.flush()
                command_ids, collapsed = await self._stage(session, wakeup, presence, now)
                audit(session, at=now, actor=actor, action=AUDIT_ACTION, targets=agent_ids,
                      outcome=f"accepted: {len(agent_ids)} agents, {collapsed} collapsed",
                      ref=wakeup.id)
                await remember_all(session, agent_ids, now, "wake_requested", f"by {actor}")
        except IntegrityError:
            # The same key raced in from a second request: answer with the winner.
            if wanted.idempotency_key is None:
                raise
            earlier = await self._by_key(actor, wanted.idempotency_key)
            if earlier is None:
                raise
            return self._replayed(earlier, wanted, ttl), False
        self._metrics.observe_wake(WakeState.REQUESTED.value, now, now, len(agent_ids))
        event(log, "wakeup_accepted", id=wakeup.id, by=actor, kind=wanted.kind,
              agents=len(agent_ids), collapsed=collapsed)
        taken = await self._outbox.send(command_ids)
        # The answer does not wait for this bookkeeping: after a wake-all it
        # queues for SQLite's write lock behind the fleet's first acks and
        # syncs (the answer came 24.8 s after the call at 1,000 agents, the
        # command 3.5 s). Only the history line of a sync that comes before
        # its ack reads it, and falls back to the request time meanwhile.
        self._in_background(self.record_published(taken))
        self._bus.publish({"kind": "wakeup", "id": wakeup.id})
        return await self.get(wakeup.id), True

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the caller returns; a failure is logged."""
        async def logged() -> None:
            try:
                await work
            except Exception as exc:  # bookkeeping must not end the server
                event(log, "background_write_failed", logging.ERROR, error=repr(exc))

        task = asyncio.get_running_loop().create_task(logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ttl(self, ttl: float | None) -> float:
        value = self._settings.default_ttl if ttl is None else ttl
        if not 1.0 <= value <= self._settings.max_ttl:
            raise BadRequest(f"ttl must be between 1 and {self._settings.max_ttl:.0f} seconds",
                             code="invalid_ttl")
        return value

    @staticmethod
    def _describe(wanted: WakeRequest) -> list[Any]:
        if wanted.kind == "agents":
            return list(wanted.agents)
        if wanted.kind == "filter":
            assert wanted.match is not None
            return [wanted.match.described]
        return [wanted.group] if wanted.kind == "group" else ["all"]

    def _replayed(self, earlier: WakeupView, wanted: WakeRequest, ttl: float) -> WakeupView:
        """``earlier``, when ``wanted`` asks for the same targets and TTL;
        IdempotencyKeyReused otherwise: a key names one request, and a
        different body under it is a caller's mistake, not a retry."""
        same = (earlier.target_kind == wanted.kind and earlier.target == self._describe(wanted)
                and abs(earlier.expires_at - earlier.created_at - ttl) < _TTL_TOLERANCE)
        if not same:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {wanted.idempotency_key!r} named wake-up {earlier.id} of "
                f"{earlier.target_kind} {earlier.target} with a TTL of "
                f"{earlier.expires_at - earlier.created_at:.0f} s; this body differs: send it "
                "with a new key")
        return earlier

    async def _by_key(self, actor: str, key: str) -> WakeupView | None:
        async with self._sessions() as session:
            found = await session.scalar(select(Wakeup.id).where(
                Wakeup.requested_by == actor, Wakeup.idempotency_key == key))
        return None if found is None else await self.get(found)

    async def _resolve(self, session: AsyncSession, wanted: WakeRequest,
                       now: float) -> dict[str, str]:
        """The agents ``wanted`` names, each with its presence now."""
        if wanted.kind == "agents":
            return await self._named_agents(session, wanted.agents, now)
        if wanted.kind == "filter":
            assert wanted.match is not None
            return await self._matching_agents(session, wanted.match.filter, now)
        rows = (await session.execute(
            select(Agent.id, Agent.groups, *_PRESENCE_COLUMNS)
            .where(Agent.revoked_at.is_(None)))).all()
        if wanted.kind != "all":
            group = topics.check_name(wanted.group or "", "group name")
            rows = [row for row in rows if group in (row.groups or [])]
        if not rows:
            raise NotFound("no enrolled agent matches this target", code="no_agents")
        return {row.id: self._presence(row, now) for row in rows}

    def _presence(self, row: Any, now: float) -> str:
        """The presence the registry shows for a row that has the columns
        of ``_PRESENCE_COLUMNS`` (a whole Agent would cost a wake-all of
        10,000 agents an ORM object each)."""
        live = self._registry.liveness(now)
        return presence_of(cast(Agent, row), now=now, stale_after=live.stale_after,
                           link_up=live.link_up)

    async def _named_agents(self, session: AsyncSession, names: Sequence[str],
                            now: float) -> dict[str, str]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            raise BadRequest("name at least one agent", code="no_agents")
        if len(wanted) > MAX_AGENTS_PER_REQUEST:
            raise BadRequest(f"at most {MAX_AGENTS_PER_REQUEST} agents per request; "
                             "use a group or 'all'", code="too_many_agents")
        rows = (await session.execute(
            select(Agent.id, Agent.revoked_at, *_PRESENCE_COLUMNS)
            .where(Agent.id.in_(wanted)))).all()
        known = {row.id: row for row in rows}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise NotFound(f"unknown agents: {', '.join(unknown[:20])}", code="unknown_agents")
        revoked = [name for name in wanted if known[name].revoked_at is not None]
        if revoked:
            raise Conflict(f"revoked agents cannot be woken: {', '.join(revoked[:20])}",
                           code="agent_revoked")
        return {name: self._presence(known[name], now) for name in wanted}

    async def _matching_agents(self, session: AsyncSession, wanted: AgentFilter,
                               now: float) -> dict[str, str]:
        """The agents in service and not revoked that ``wanted`` names now
        (presence judged as the list judges it), each with its presence."""
        dialect = session.get_bind().dialect.name
        rows = (await session.execute(
            select(Agent.id, *_PRESENCE_COLUMNS)
            .where(*conditions(wanted, self._registry.liveness(now), dialect),
                   Agent.revoked_at.is_(None))
            .order_by(Agent.id).limit(MAX_AGENTS_PER_REQUEST + 1))).all()
        if not rows:
            raise NotFound("no enrolled agent matches this filter", code="no_agents")
        if len(rows) > MAX_AGENTS_PER_REQUEST:
            raise BadRequest(f"the filter matches more than {MAX_AGENTS_PER_REQUEST} agents; "
                             "narrow it, or wake a group or 'all'", code="too_many_agents")
        return {row.id: self._presence(row, now) for row in rows}

    async def _stage(self, session: AsyncSession, wakeup: Wakeup, presence: dict[str, str],
                     now: float) -> tuple[list[str], int]:
        agent_ids = list(presence)
        if wakeup.target_kind in ("group", "all"):
            command = self._command(self._fanout_target(wakeup), now, wakeup)
            self._outbox.stage(session, command, self._fanout_topic(wakeup))
            # One bulk insert: ORM objects one by one were most of a
            # wake-all's answer time (seconds at 10,000 agents).
            await session.execute(insert(WakeTarget), [
                {"wakeup_id": wakeup.id, "agent_id": agent_id, "requested_at": now,
                 "expires_at": wakeup.expires_at, "command_id": command.id,
                 "command_expires_at": command.expires_at, "presence": presence[agent_id]}
                for agent_id in agent_ids])
            return [command.id], 0
        riding = await self._unacked_commands(session, agent_ids)
        staged: list[str] = []
        collapsed = 0
        for agent_id in agent_ids:
            ride = riding.get(agent_id)
            if ride is not None and collapse_into(ride[1], new_expires_at=wakeup.expires_at,
                                                  now=now):
                session.add(self._target(wakeup, agent_id, now, None, ride=ride,
                                         presence=presence[agent_id]))
                collapsed += 1
                continue
            command = self._command(target_agent(agent_id), now, wakeup)
            self._outbox.stage(session, command, topics.agent_cmd(agent_id))
            session.add(self._target(wakeup, agent_id, now, command, presence=presence[agent_id]))
            staged.append(command.id)
        return staged, collapsed

    @staticmethod
    def _fanout_target(wakeup: Wakeup) -> str:
        return TARGET_ALL if wakeup.target_kind == "all" else target_group(wakeup.target[0])

    @staticmethod
    def _fanout_topic(wakeup: Wakeup) -> str:
        return topics.ALL_CMD if wakeup.target_kind == "all" else topics.group_cmd(
            wakeup.target[0])

    @staticmethod
    def _command(target: str, now: float, wakeup: Wakeup) -> Command:
        return Command(type=CommandType.WAKE, target=target, issued_at=now,
                       expires_at=wakeup.expires_at, body={"wakeup": wakeup.id},
                       id=uuid.uuid4().hex)

    @staticmethod
    def _target(wakeup: Wakeup, agent_id: str, now: float, command: Command | None,
                ride: tuple[str, float, float | None] | None = None, *,
                presence: str) -> WakeTarget:
        if command is not None:
            return WakeTarget(wakeup_id=wakeup.id, agent_id=agent_id, requested_at=now,
                              expires_at=wakeup.expires_at, command_id=command.id,
                              command_expires_at=command.expires_at, presence=presence)
        assert ride is not None
        return WakeTarget(wakeup_id=wakeup.id, agent_id=agent_id, requested_at=now,
                          expires_at=wakeup.expires_at, command_id=ride[0],
                          command_expires_at=ride[1], published_at=ride[2], presence=presence)

    @staticmethod
    async def _unacked_commands(session: AsyncSession, agent_ids: list[str]
                                ) -> dict[str, tuple[str, float, float | None]]:
        """Per agent, its newest un-acked wake command: (id, expiry, published at)."""
        rows = (await session.execute(
            select(WakeTarget.agent_id, WakeTarget.command_id, WakeTarget.command_expires_at,
                   WakeTarget.published_at)
            .where(WakeTarget.agent_id.in_(agent_ids),
                   WakeTarget.state == WakeState.REQUESTED.value,
                   WakeTarget.command_id.is_not(None))
            .order_by(WakeTarget.command_expires_at))).all()
        return {row.agent_id: (row.command_id, row.command_expires_at, row.published_at)
                for row in rows}

    async def record_published(self, taken: dict[str, float]) -> None:
        """Record when the broker took commands (``Outbox.send``, ``Outbox.flush``)."""
        if not taken:
            return
        async with self._sessions() as session, session.begin():
            for command_id, at in taken.items():
                await session.execute(update(WakeTarget)
                                      .where(WakeTarget.command_id == command_id,
                                             WakeTarget.published_at.is_(None))
                                      .values(published_at=at))

    # --- delivery ------------------------------------------------------------

    async def on_ack(self, agent_id: str, command_id: str, now: float,
                     joined: Callable[[AsyncSession], Awaitable[None]] | None = None) -> None:
        """The agent acked ``command_id``: its targets on it are delivered.
        The move is one conditional UPDATE (``state = requested``): when a
        sync of the same agent crosses the ack, whichever commits first moves
        the target, and only the statement that moved it writes its history
        line and counts its metric (``_satisfy`` for the other side).
        ``joined`` writes the caller's part first, in the same transaction
        (the message's claim, the agent's last seen)."""
        async with self._sessions() as session, session.begin():
            if joined is not None:
                await joined(session)
            # RETURNING (SQLite 3.35+, PostgreSQL): the latency metric
            # needs each target's request time, at no extra query.
            requested = (await session.scalars(
                update(WakeTarget)
                .where(WakeTarget.agent_id == agent_id, WakeTarget.command_id == command_id,
                       WakeTarget.state == WakeState.REQUESTED.value)
                .values(state=WakeState.DELIVERED.value, delivered_at=now)
                .returning(WakeTarget.requested_at))).all()
            if requested:
                await remember_lines(session, [(agent_id, now, "wake_delivered",
                                                f"command {command_id}")])
        for requested_at in requested:
            self._metrics.observe_wake(WakeState.DELIVERED.value, requested_at, now)
        if requested:
            self._notify_agent(agent_id)

    async def on_sync(self, agent_id: str, *, started_at: float, sync_id: str,
                      wakes: Sequence[str], now: float,
                      joined: Callable[[AsyncSession], Awaitable[None]] | None = None) -> int:
        """A sync of ``agent_id`` that started at ``started_at`` (server clock)
        completed: satisfy what it answers (``_satisfy``). Returns how many
        targets it satisfied. ``joined`` writes the caller's part of the same
        sync (the registry's record of it) first, in the same transaction:
        one commit per sync, not one per concern."""
        if self.applied(agent_id, sync_id):
            if joined is not None:
                async with self._sessions() as session, session.begin():
                    await joined(session)
            return 0
        async with self._sessions() as session, session.begin():
            if joined is not None:
                await joined(session)
            moved = await self._satisfy(session, agent_id, started_at=started_at,
                                        sync_id=sync_id, now=now)
            consumed = await self._consumed(session, agent_id, wakes)
            fresh = await self._reissue(session, agent_id, consumed, now)
            await self._settle(session, moved.wakeup_ids)
        self._mark_applied(agent_id, sync_id)
        for requested_at in moved.delivered:
            self._metrics.observe_wake(WakeState.DELIVERED.value, requested_at, now)
        for requested_at in moved.satisfied:
            self._metrics.observe_wake(WakeState.SATISFIED.value, requested_at, now)
        if fresh is not None:
            event(log, "wake_reissued", agent=agent_id, command=fresh, targets=len(consumed))
            await self.record_published(await self._outbox.send([fresh]))
        if moved.satisfied:
            event(log, "wakeups_satisfied", agent=agent_id, sync=sync_id,
                  count=len(moved.satisfied))
            self._notify_agent(agent_id)
            for wakeup_id in moved.wakeup_ids:
                self._bus.publish({"kind": "wakeup", "id": wakeup_id})
        return len(moved.satisfied)

    async def _satisfy(self, session: AsyncSession, agent_id: str, *, started_at: float,
                       sync_id: str, now: float) -> _Moved:
        """The one door to "satisfied": the agent's pending targets requested
        before ``started_at`` (``epns.wakeup.satisfies``, here in SQL) move
        there, each by a conditional UPDATE (``state = requested``, then
        ``state = delivered``) whose RETURNING rows are the targets this
        statement moved, and only those get a history line and a metric. A
        target an ack, an expiry, a cancel or another replica's sync moved
        first no longer matches, on SQLite (one writer at a time) and on
        PostgreSQL (the row lock, then the condition read again) alike; a
        read before the write decided it before, and on SQLite that read ran
        before the deferred BEGIN, so an ack and a sync crossing could both
        record "delivered". Core statements: this runs once per agent of a
        wake-all."""
        answered = WakeTarget.requested_at < started_at
        final = {"state": WakeState.SATISFIED.value, "satisfied_at": now, "ended_at": now,
                 "sync_id": sync_id}
        # Not acked yet: the sync came before the ack (the ack goes through
        # the broker, the sync straight here), so it delivers them too.
        early = (await session.execute(
            update(WakeTarget)
            .where(WakeTarget.agent_id == agent_id,
                   WakeTarget.state == WakeState.REQUESTED.value, answered)
            .values(delivered_at=now, **final)
            .returning(WakeTarget.wakeup_id, WakeTarget.requested_at,
                       WakeTarget.published_at, WakeTarget.command_id))).all()
        acked = (await session.execute(
            update(WakeTarget)
            .where(WakeTarget.agent_id == agent_id,
                   WakeTarget.state == WakeState.DELIVERED.value, answered)
            .values(**final)
            .returning(WakeTarget.wakeup_id, WakeTarget.requested_at))).all()
        # Delivered once, as the ack would have recorded it (the late ack
        # finds nothing left to deliver). The line goes at the command's
        # publication, the earliest it can have arrived, so the story reads
        # delivered, then synced.
        await remember_lines(session, [
            (agent_id, row.published_at or row.requested_at, "wake_delivered",
             f"command {row.command_id} (its sync came before its ack)") for row in early])
        return _Moved(delivered=tuple(row.requested_at for row in early),
                      satisfied=tuple(row.requested_at for row in (*early, *acked)),
                      wakeup_ids={row.wakeup_id for row in (*early, *acked)})

    @staticmethod
    async def _consumed(session: AsyncSession, agent_id: str,
                        wakes: Sequence[str]) -> list[Any]:
        """The targets still pending after a sync whose command that sync
        used up (its ``wakes``): requested after the sync started, their
        command crossed their request."""
        if not wakes:
            return []
        return list((await session.execute(
            select(WakeTarget.id, WakeTarget.wakeup_id, WakeTarget.expires_at)
            .where(WakeTarget.agent_id == agent_id, WakeTarget.state.in_(PENDING_STATES),
                   WakeTarget.command_id.in_(list(wakes))))).all())

    async def _reissue(self, session: AsyncSession, agent_id: str, consumed: Sequence[Any],
                       now: float) -> str | None:
        """One fresh command for targets whose command a sync already used up."""
        if not consumed:
            return None
        expires_at = max(t.expires_at for t in consumed)
        command = Command(type=CommandType.WAKE, target=target_agent(agent_id), issued_at=now,
                          expires_at=expires_at, body={"wakeup": consumed[0].wakeup_id},
                          id=uuid.uuid4().hex)
        self._outbox.stage(session, command, topics.agent_cmd(agent_id))
        await session.execute(
            update(WakeTarget)
            .where(WakeTarget.id.in_([t.id for t in consumed]),
                   WakeTarget.state.in_(PENDING_STATES))
            .values(command_id=command.id, command_expires_at=expires_at, published_at=None))
        return command.id

    async def _settle(self, session: AsyncSession, wakeup_ids: set[str]) -> None:
        """Write the final outcome of wake-ups none of whose targets is pending.
        Asked per sync, so it first looks for one pending target (one index
        probe), and counts the targets only once none is left: counting at
        every sync made a wake-all of N agents cost O(N^2)."""
        for wakeup_id in wakeup_ids:
            pending = await session.scalar(select(WakeTarget.id).where(
                WakeTarget.wakeup_id == wakeup_id,
                WakeTarget.state.in_(PENDING_STATES)).limit(1))
            if pending is None:
                counts = await self._counts(session, wakeup_id)
                await settle_audit(session, action=AUDIT_ACTION, ref=wakeup_id,
                                   outcome=_outcome_words(counts))

    # --- expiry --------------------------------------------------------------

    async def expire(self, now: float) -> int:
        """End every pending target whose TTL ran out; returns how many. One
        conditional UPDATE, as ``_satisfy``: a target a sync satisfied
        meanwhile is not expired over it."""
        async with self._sessions() as session, session.begin():
            due = (await session.execute(
                update(WakeTarget)
                .where(WakeTarget.state.in_(PENDING_STATES), WakeTarget.expires_at <= now)
                .values(state=WakeState.EXPIRED.value, ended_at=now)
                .returning(WakeTarget.agent_id, WakeTarget.wakeup_id))).all()
            await remember_lines(session, [(t.agent_id, now, "wake_expired",
                                             f"wake-up {t.wakeup_id}") for t in due])
            wakeup_ids = {t.wakeup_id for t in due}
            await self._settle(session, wakeup_ids)
        self._metrics.observe_wake(WakeState.EXPIRED.value, now, now, len(due))
        if due:
            event(log, "wakeups_expired", count=len(due))
            for wakeup_id in wakeup_ids:
                self._bus.publish({"kind": "wakeup", "id": wakeup_id})
            for agent_id in {t.agent_id for t in due}:
                self._notify_agent(agent_id)
        return len(due)

    async def run_sweeper(self) -> None:
        """Expire targets every ``sweep_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._settings.sweep_interval)
            try:
                await self.expire(time.time())
            except Exception as exc:  # the sweeper must outlive a bad round
                event(log, "sweep_failed", logging.ERROR, error=repr(exc))

    # --- cancel --------------------------------------------------------------

    async def cancel(self, actor: str, wakeup_id: str) -> WakeupView:
        """End the wake-up's pending targets as cancelled; satisfied and expired
        ones stay. Commands staged for them alone leave the outbox unsent. Again
        on a cancelled wake-up: the same answer, nothing changes.
        NotFound for an unknown id; Conflict (wakeup_finished) when nothing
        was left pending before any cancel."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            wakeup = await session.get(Wakeup, wakeup_id, with_for_update=True)
            if wakeup is None:
                raise NotFound(f"no wake-up {wakeup_id!r}", code="unknown_wakeup")
            if wakeup.cancelled_at is not None:
                cancelled: Sequence[_CancelledRow] = ()
            else:
                # One conditional UPDATE, as in _satisfy: a target a sync or an
                # ack moved first no longer matches, where a read then a write
                # could overwrite a satisfied target (SQLite's read came before
                # its deferred BEGIN).
                cancelled = (await session.execute(
                    update(WakeTarget)
                    .where(WakeTarget.wakeup_id == wakeup_id,
                           WakeTarget.state.in_(PENDING_STATES))
                    .values(state=WakeState.CANCELLED.value, ended_at=now)
                    .returning(WakeTarget.agent_id, WakeTarget.command_id,
                               WakeTarget.delivered_at))).all()
                if not cancelled:
                    counts = await self._counts(session, wakeup_id)
                    raise Conflict(
                        f"wake-up {wakeup_id} has no target left to cancel: "
                        f"{_outcome_words(counts)}", code="wakeup_finished")
                withdrawn = await self._end_cancelled(session, wakeup, cancelled, actor, now)
        if not cancelled:
            return await self.get(wakeup_id, with_targets=True)
        self._metrics.observe_wake(WakeState.CANCELLED.value, now, now, len(cancelled))
        event(log, "wakeup_cancelled", id=wakeup_id, by=actor, targets=len(cancelled),
              withdrawn=withdrawn)
        self._bus.publish({"kind": "wakeup", "id": wakeup_id})
        for agent_id in {t.agent_id for t in cancelled}:
            self._notify_agent(agent_id)
        return await self.get(wakeup_id, with_targets=True)

    async def _end_cancelled(self, session: AsyncSession, wakeup: Wakeup,
                             cancelled: Sequence[_CancelledRow], actor: str, now: float) -> int:
        """Write the rest of a cancel whose targets (``cancelled``: their agent,
        command and delivery) moved: the wake-up, history, audit, and the
        outbox rows no pending target needs any more. Returns how many left it."""
        wakeup.cancelled_at, wakeup.cancelled_by = now, actor
        # A command may carry other requests' targets (collapse, a fan-out):
        # it stays while one of them is pending.
        commands = {t.command_id for t in cancelled if t.command_id is not None}
        needed = set((await session.scalars(select(WakeTarget.command_id).where(
            WakeTarget.command_id.in_(commands),
            WakeTarget.state.in_(PENDING_STATES)))).all()) if commands else set()
        unneeded = list(commands - needed)
        withdrawn = 0
        if unneeded:
            result = await session.execute(
                delete(PendingCommand).where(PendingCommand.id.in_(unneeded)))
            withdrawn = int(result.rowcount)  # type: ignore[attr-defined]
        agent_ids = sorted({t.agent_id for t in cancelled})
        await remember_all(session, agent_ids, now, "wake_cancelled", f"by {actor}")
        offline = sum(1 for t in cancelled if t.delivered_at is None)
        audit(session, at=now, actor=actor, action=CANCEL_ACTION, targets=agent_ids,
              outcome=f"cancelled {len(cancelled)} pending targets ({offline} not yet "
                      f"delivered); {withdrawn} unsent commands withdrawn", ref=wakeup.id)
        await self._settle(session, {wakeup.id})
        return withdrawn

    # --- reading -------------------------------------------------------------

    async def get(self, wakeup_id: str, *, with_targets: bool = False) -> WakeupView:
        """One wake-up; NotFound when there is no such id."""
        async with self._sessions() as session:
            wakeup = await session.get(Wakeup, wakeup_id)
            if wakeup is None:
                raise NotFound(f"no wake-up {wakeup_id!r}", code="unknown_wakeup")
            counts = await self._counts(session, wakeup_id)
            targets: tuple[TargetView, ...] = ()
            if with_targets:
                targets = await self._targets(session, wakeup_id)
        return _view(wakeup, counts, targets)

    async def _targets(self, session: AsyncSession, wakeup_id: str) -> tuple[TargetView, ...]:
        """The wake-up's targets, each with its agent's presence then and now."""
        now = time.time()
        rows = (await session.execute(
            select(WakeTarget, *_PRESENCE_COLUMNS)
            .outerjoin(Agent, Agent.id == WakeTarget.agent_id)
            .where(WakeTarget.wakeup_id == wakeup_id).order_by(WakeTarget.agent_id))).all()
        return tuple(TargetView(t.agent_id, t.state, t.requested_at, t.delivered_at,
                                t.satisfied_at, t.ended_at, t.presence,
                                None if row.presence is None else self._presence(row, now),
                                row.last_seen or row.presence_at)
                     for row in rows for t in (row[0],))

    async def page(self, wanted: WakeupFilter, *, newest_first: bool, limit: int,
                   offset: int) -> tuple[list[WakeupView], int]:
        """One page of the wake-ups ``wanted`` names, by creation time (ties
        by id), and how many it names in all."""
        order = ((Wakeup.created_at.desc(), Wakeup.id.desc()) if newest_first
                 else (Wakeup.created_at.asc(), Wakeup.id.asc()))
        where = wanted.conditions()
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(Wakeup).where(*where))
            rows = (await session.scalars(select(Wakeup).where(*where).order_by(*order)
                                          .offset(offset).limit(limit))).all()
            views = [_view(row, await self._counts(session, row.id), ()) for row in rows]
        return views, total or 0

    async def pending_for(self, agent_id: str) -> list[TargetView]:
        """The agent's targets that are still pending."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(WakeTarget).where(
                WakeTarget.agent_id == agent_id,
                WakeTarget.state.in_(PENDING_STATES)))).all()
        return [TargetView(t.agent_id, t.state, t.requested_at, t.delivered_at,
                           t.satisfied_at, t.ended_at) for t in rows]

    @staticmethod
    async def _counts(session: AsyncSession, wakeup_id: str) -> dict[str, int]:
        rows = (await session.execute(
            select(WakeTarget.state, func.count()).where(WakeTarget.wakeup_id == wakeup_id)
            .group_by(WakeTarget.state))).all()
        counts = Counter({state.value: 0 for state in WakeState})
        counts.update({row[0]: row[1] for row in rows})
        return dict(counts)

    def _notify_agent(self, agent_id: str) -> None:
        self._bus.publish({"kind": "agent", "id": agent_id})


def _view(wakeup: Wakeup, counts: dict[str, int], targets: tuple[TargetView, ...]) -> WakeupView:
    return WakeupView(wakeup.id, wakeup.created_at, wakeup.expires_at, wakeup.requested_by,
                      wakeup.target_kind, list(wakeup.target), counts, targets,
                      wakeup.cancelled_at, wakeup.cancelled_by)


def _outcome_words(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    words = (f"satisfied {counts.get('satisfied', 0)}/{total}, "
             f"expired {counts.get('expired', 0)}/{total}")
    cancelled = counts.get(WakeState.CANCELLED.value, 0)
    return f"{words}, cancelled {cancelled}/{total}" if cancelled else words
