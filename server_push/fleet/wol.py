"""Wake-on-LAN dispatch, tracked per target machine (``events.WolTracker``).

A request becomes one ``WolRequest`` row per target, in the same transaction
as the signed ``wol`` commands for its relays (``Outbox.stage``), so a request
that is accepted always has its commands on their way, re-sent after a
reconnect. Relays are elected by ``epns.wol_relays``. Then:

- the server sends its own packets to the addresses on the settings page;
- each relay's ``wol_result`` event fills in its send's result;
- the target's agent coming online before the deadline marks it ``woke``;
- the sweeper marks what is left ``not_woken`` after the deadline.

A relay's command id is the request id, a dot and the relay's index, so its
result finds the request with one primary-key lookup.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import topics
from epns.envelope import Command, CommandType, target_agent
from epns.errors import BadRequest, Conflict, MalformedMessage, NotFound
from epns.logs import event
from epns.wol import Destination, SendOutcome, WolPlan, WolTarget, parse_address, result_body
from epns.wol_relays import (
    Candidate,
    WakePath,
    elect_relays,
    path_from_interfaces,
    relay_body,
    relay_warning,
    relays_in,
    wake_path,
)
from server_push.fleet.bus import Bus
from server_push.fleet.registry import Registry, reported_interfaces
from server_push.link.outbox import Outbox
from server_push.link.wol_sender import Networks, send_plan
from server_push.store.history import audit, remember, settle_audit
from server_push.store.models import Agent, WolRequest
from server_push.store.settings_store import SettingsStore, WolConfig

log = logging.getLogger(__name__)

AUDIT_ACTION = "wol"
MAX_TARGETS_PER_REQUEST = 64
SERVER = "server"
# Between the rounds of the server's own packets, as an agent relay's default.
SPACING = 0.1


class WolState(StrEnum):
    """Where a request for one target stands."""

    SENT = "sent"
    WOKE = "woke"
    NOT_WOKEN = "not_woken"


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One machine to wake as the caller names it: an agent (its MAC and address
    come from its presence) and/or a MAC and an address with its prefix, which
    win over what the agent reported."""

    agent: str | None = None
    mac: str | None = None
    address: str | None = None
    prefix: int | None = None


@dataclass(frozen=True, slots=True)
class WolAsk:
    """A request: its targets, and optional overrides of where relays send
    (``addresses`` replaces the subnet broadcast and last address) and of the
    ports on the settings page (for relays and the server alike)."""

    targets: tuple[TargetSpec, ...]
    addresses: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WolView:
    """One target's request with its sends and outcome, for the API."""

    id: str
    created_at: float
    requested_by: str
    agent_id: str | None
    mac: str
    address: str | None
    subnet: str | None
    state: str
    deadline: float
    woke_at: float | None
    relays: list[str]
    sends: list[dict[str, Any]]
    warning: str | None


@dataclass(frozen=True, slots=True)
class PreflightView:
    """What a request for one target would find, asked before sending."""

    agent_id: str | None
    mac: str | None
    address: str | None
    subnet: str | None
    relays_online: int
    relays: list[str]
    warning: str | None
    # Whether a request now would send any packet for it (``_packets``).
    packets: bool


@dataclass(frozen=True, slots=True)
class _Batch:
    """What every target of one request shares."""

    actor: str
    now: float
    config: WolConfig
    ports: tuple[int, ...]
    addresses: tuple[str, ...]
    candidates: list[Candidate]

    @property
    def deadline(self) -> float:
        return self.now + self.config.timeout


class WolDispatch:
    """Plans, sends and tracks Wake-on-LAN requests."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, bus: Bus,
                 registry: Registry, *, config: SettingsStore, sweep_interval: float,
                 allowed: Networks) -> None:
        self._sessions = sessions
        self._allowed = allowed
        self._outbox = outbox
        self._bus = bus
        self._registry = registry
        self._config = config
        self._sweep_interval = sweep_interval
        # pysqlite reads outside the write transaction, so two results for one
        # request could each write back their own copy of its sends: one at a
        # time in this process (FOR UPDATE does it on PostgreSQL).
        self._fill_lock = asyncio.Lock()

    # --- before sending ------------------------------------------------------

    async def preflight(self, specs: Sequence[TargetSpec]) -> list[PreflightView]:
        """Per target: its subnet, the relays online there, and the warning the
        admin must see before sending."""
        config = await self._config.wol()
        now = time.time()
        async with self._sessions() as session:
            located = await self._locate(session, specs, need_mac=False)
            candidates = await self._candidates(session, now)
        views = []
        for agent_id, path in located:
            online = [] if path.subnet is None else relays_in(path.subnet, candidates, agent_id)
            subnet = _text(path.subnet)
            views.append(PreflightView(agent_id, path.mac, path.address, subnet, len(online),
                                       online[:config.relays_per_subnet],
                                       relay_warning(subnet, len(online), len(config.addresses)),
                                       packets=_packets(agent_id, path, online, config)))
        return views

    # --- sending -------------------------------------------------------------

    async def request(self, actor: str, ask: WolAsk) -> list[WolView]:
        """Send for every target of ``ask``; returns the tracked requests."""
        if not ask.targets:
            raise BadRequest("name at least one agent or target", code="no_targets")
        if len(ask.targets) > MAX_TARGETS_PER_REQUEST:
            raise BadRequest(f"at most {MAX_TARGETS_PER_REQUEST} targets per request",
                             code="too_many_targets")
        addresses = _checked_addresses(ask.addresses)
        config = await self._config.wol()
        now = time.time()
        async with self._sessions() as session, session.begin():
            located = await self._locate(session, ask.targets, need_mac=True)
            batch = _Batch(actor, now, config, ask.ports or config.ports, addresses,
                           await self._candidates(session, now))
            rows = [self._stage(session, batch, agent_id, path) for agent_id, path in located]
        await self._outbox.send([s["command"] for row in rows for s in row.sends
                                 if s["command"] is not None])
        rows = await self._send_direct(rows, config.repeat)
        for row in rows:
            event(log, "wol_sent", id=row.id, by=actor, target=_label(row),
                  relays=",".join(_relays(row)) or "none", server=_server_addresses(row))
            self._bus.publish({"kind": "wol", "id": row.id})
        return [_view(row) for row in rows]

    def _stage(self, session: AsyncSession, batch: _Batch, agent_id: str | None,
               path: WakePath) -> WolRequest:
        """One request row and its relays' commands, inside the transaction."""
        assert path.mac is not None  # _locate(need_mac=True) made sure
        row_id = uuid.uuid4().hex[:24]
        relays = elect_relays(path, batch.candidates, batch.config.relays_per_subnet,
                              exclude=agent_id)
        to = list(batch.addresses or path.destinations())
        body = relay_body(path.mac, to, batch.ports, batch.config.repeat)
        sends = []
        for index, relay in enumerate(relays):
            command = Command(type=CommandType.WOL, target=target_agent(relay),
                              issued_at=batch.now, expires_at=batch.deadline, body=body,
                              id=f"{row_id}.{index}")
            self._outbox.stage(session, command, topics.agent_cmd(relay))
            sends.append(_send(relay, to, batch, command.id))
            remember(session, relay, batch.now, "wol_relay",
                     f"for {agent_id or path.mac} to {', '.join(to)}")
        if batch.config.addresses:
            sends.append(_send(SERVER, list(batch.config.addresses), batch, None))
        row = WolRequest(id=row_id, created_at=batch.now, requested_by=batch.actor,
                         agent_id=agent_id, mac=path.mac, address=path.address,
                         subnet=_text(path.subnet), sends=sends, state=WolState.SENT.value,
                         deadline=batch.deadline)
        session.add(row)
        relayed = ", ".join(relays) or "none"
        audit(session, at=batch.now, actor=batch.actor, action=AUDIT_ACTION,
              targets=[agent_id or path.mac], outcome=f"sent: relays {relayed}", ref=row_id)
        if agent_id is not None:
            remember(session, agent_id, batch.now, "wol_requested",
                     f"by {batch.actor}; relays {relayed}")
        return row

    async def _send_direct(self, rows: list[WolRequest], repeat: int) -> list[WolRequest]:
        """The server's own packets, to the settings page's addresses; returns
        the rows with their results."""
        direct = [(row, send) for row in rows for send in row.sends if send["by"] == SERVER]
        if not direct:
            return rows
        plan = WolPlan(tuple(WolTarget(row.mac, tuple(
            Destination(address, port) for address in send["to"] for port in send["ports"]))
            for row, send in direct), repeat)
        outcomes = await send_plan(plan, SPACING, self._allowed)
        now = time.time()
        updated: dict[str, WolRequest] = {}
        async with self._fill_lock, self._sessions() as session, session.begin():
            for index, (row, _) in enumerate(direct):
                mine = [SendOutcome(0, o.destination, o.error) for o in outcomes
                        if o.target == index]
                result = {**result_body(WolPlan((plan.targets[index],), repeat), mine), "at": now}
                filled = await _fill(session, row.id, lambda send: send["by"] == SERVER, result)
                updated[row.id] = filled or row
        return [updated.get(row.id, row) for row in rows]

    # --- tracking (events.WolTracker) ----------------------------------------

    async def on_result(self, agent_id: str, ref: str | None, body: dict[str, Any],
                        now: float) -> None:
        """A relay reported what it sent: fill in its send's result."""
        request_id, dot, _ = (ref or "").partition(".")
        if not dot:
            event(log, "wol_result_ignored", logging.WARNING, agent=agent_id, ref=ref)
            return
        result: dict[str, Any] = {key: body[key] for key in ("ok", "targets", "errors")
                                  if key in body}
        async with self._fill_lock, self._sessions() as session, session.begin():
            row = await _fill(session, request_id,
                              lambda send: send["by"] == agent_id and send["command"] == ref,
                              {**result, "at": now})
            if row is not None:
                remember(session, agent_id, now, "wol_relayed",
                         f"for {_label(row)}: {'ok' if body.get('ok') is True else 'failed'}")
        if row is None:
            event(log, "wol_result_ignored", logging.WARNING, agent=agent_id, ref=ref)
            return
        event(log, "wol_relayed", id=request_id, relay=agent_id, ok=body.get("ok"))
        self._bus.publish({"kind": "wol", "id": request_id})

    async def on_agent_online(self, agent_id: str, now: float) -> None:
        """``agent_id`` came online: its requests still waiting have woken it.
        Every agent back after a broker restart comes through here, and
        almost none has a request waiting: one read (an index probe), and a
        transaction only when there is one."""
        waiting = (WolRequest.agent_id == agent_id, WolRequest.state == WolState.SENT.value,
                   WolRequest.deadline >= now)
        async with self._sessions() as session:
            if await session.scalar(select(WolRequest.id).where(*waiting).limit(1)) is None:
                return
        async with self._sessions() as session, session.begin():
            rows = (await session.scalars(select(WolRequest).where(*waiting))).all()
            for row in rows:
                row.state = WolState.WOKE.value
                row.woke_at = now
                words = f"woke {now - row.created_at:.0f} s after the request"
                await settle_audit(session, action=AUDIT_ACTION, ref=row.id, outcome=words)
                remember(session, agent_id, now, "wol_woke", f"request {row.id}: {words}")
        for row in rows:
            event(log, "wol_woke", id=row.id, agent=agent_id)
            self._bus.publish({"kind": "wol", "id": row.id})

    async def expire(self, now: float) -> int:
        """Mark every request past its deadline ``not_woken``; returns how many."""
        async with self._sessions() as session, session.begin():
            rows = (await session.scalars(select(WolRequest).where(
                WolRequest.state == WolState.SENT.value, WolRequest.deadline < now))).all()
            for row in rows:
                row.state = WolState.NOT_WOKEN.value
                words = f"not woken within {row.deadline - row.created_at:.0f} s"
                await settle_audit(session, action=AUDIT_ACTION, ref=row.id, outcome=words)
                if row.agent_id is not None:
                    remember(session, row.agent_id, now, "wol_not_woken",
                             f"request {row.id}: {words}")
        for row in rows:
            event(log, "wol_not_woken", id=row.id, target=_label(row))
            self._bus.publish({"kind": "wol", "id": row.id})
        return len(rows)

    async def run_sweeper(self) -> None:
        """Expire requests every ``sweep_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.expire(time.time())
            except Exception as exc:  # the sweeper must outlive a bad round
                event(log, "wol_sweep_failed", logging.ERROR, error=repr(exc))

    # --- reading -------------------------------------------------------------

    async def get(self, request_id: str) -> WolView:
        """One request; NotFound when there is no such id."""
        async with self._sessions() as session:
            row = await session.get(WolRequest, request_id)
        if row is None:
            raise NotFound(f"no Wake-on-LAN request {request_id!r}", code="unknown_wol")
        return _view(row)

    async def recent(self, limit: int = 50) -> list[WolView]:
        """The newest requests first."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(WolRequest).order_by(
                WolRequest.created_at.desc(), WolRequest.id).limit(limit))).all()
        return [_view(row) for row in rows]

    # --- targets and relays --------------------------------------------------

    async def _locate(self, session: AsyncSession, specs: Sequence[TargetSpec], *,
                      need_mac: bool) -> list[tuple[str | None, WakePath]]:
        """Each target's agent id and path: what the caller gave, else what its
        agent last reported. BadRequest, NotFound or Conflict say what is wrong."""
        agents = await _agents(session, [spec.agent for spec in specs if spec.agent])
        located = []
        for number, spec in enumerate(specs, 1):
            try:
                given = wake_path(spec.mac, spec.address, spec.prefix)
            except MalformedMessage as exc:
                raise BadRequest(f"target {number}: {exc}", code="invalid_target") from None
            agent = agents.get(spec.agent or "")
            known = None if agent is None else path_from_interfaces(reported_interfaces(agent))
            path = given.overriding(known or WakePath(None))
            if need_mac and path.mac is None:
                raise BadRequest(
                    f"target {number}: agent {spec.agent} has reported no IPv4 interface with "
                    "a MAC address; give its 'mac' (and 'address' and 'prefix')",
                    code="unknown_mac")
            located.append((spec.agent, path))
        return located

    async def _candidates(self, session: AsyncSession, now: float) -> list[Candidate]:
        """The agents that could relay now: online (by the registry's rules) and
        not revoked."""
        rows = (await session.scalars(select(Agent).where(
            Agent.presence == "online", Agent.revoked_at.is_(None)))).all()
        return [Candidate(row.id, row.last_seen or row.presence_at or 0.0,
                          tuple(i.address for i in reported_interfaces(row)))
                for row in rows if self._registry.view(row, now).presence == "online"]


async def _agents(session: AsyncSession, names: list[str]) -> dict[str, Agent]:
    """The named agents; NotFound for unknown ones, Conflict for revoked ones."""
    if not names:
        return {}
    rows = (await session.scalars(select(Agent).where(Agent.id.in_(names)))).all()
    found = {row.id: row for row in rows}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise NotFound(f"unknown agents: {', '.join(unknown[:20])}", code="unknown_agents")
    revoked = [name for name in names if found[name].revoked_at is not None]
    if revoked:
        raise Conflict(f"revoked agents cannot be woken: {', '.join(revoked[:20])}",
                       code="agent_revoked")
    return found


def _packets(agent_id: str | None, path: WakePath, relays: Sequence[str],
             config: WolConfig) -> bool:
    """Whether a request now would send any packet for a target: a relay is
    online in its subnet or the settings name addresses for the server's own
    packets, and, for an agent, its MAC is known (the request is refused
    otherwise). A target named by address gets its MAC with the request."""
    known = agent_id is None or path.mac is not None
    return known and bool(relays or config.addresses)


def _checked_addresses(texts: Sequence[str]) -> tuple[str, ...]:
    """The caller's relay addresses, canonical; BadRequest names a bad one."""
    try:
        return tuple(dict.fromkeys(parse_address(text) for text in texts))
    except MalformedMessage as exc:
        raise BadRequest(f"addresses: {exc}", code="invalid_address") from None


async def _fill(session: AsyncSession, request_id: str, match: Callable[[dict[str, Any]], bool],
                result: dict[str, Any]) -> WolRequest | None:
    """Set the result of the request's first send that ``match``es and has none
    yet; the row, or None when there is no such request or send."""
    row = await session.get(WolRequest, request_id, with_for_update=True)
    if row is None:
        return None
    sends = list(row.sends)
    for index, send in enumerate(sends):
        if match(send) and send.get("result") is None:
            sends[index] = {**send, "result": result}
            row.sends = sends  # a new list: JSON columns do not see changes inside one
            return row
    return None


def _send(by: str, to: list[str], batch: _Batch, command: str | None) -> dict[str, Any]:
    return {"by": by, "to": to, "ports": list(batch.ports), "command": command,
            "at": batch.now, "result": None}


def _relays(row: WolRequest) -> list[str]:
    return [send["by"] for send in row.sends if send["by"] != SERVER]


def _server_addresses(row: WolRequest) -> int:
    return sum(len(send["to"]) for send in row.sends if send["by"] == SERVER)


def _label(row: WolRequest) -> str:
    return row.agent_id or row.mac


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)


def _view(row: WolRequest) -> WolView:
    relays = _relays(row)
    return WolView(row.id, row.created_at, row.requested_by, row.agent_id, row.mac, row.address,
                   row.subnet, row.state, row.deadline, row.woke_at, relays, list(row.sends),
                   relay_warning(row.subnet, len(relays), _server_addresses(row)))

