"""Wake campaigns: scheduled and recurring wakes, paced by the server-wide
cap, with a report per run (docs/campaigns.md).

The calendar (``epns.campaign_schedule``) and the cap (``epns.pacing``) are
pure; this module keeps campaigns, runs and their targets in the database
and moves them on, one round every ``campaigns.tick`` seconds:

1. *plan*: each enabled campaign's slots since it was last looked at become
   runs (the newest inside its window) or ``missed`` runs;
2. *claim*: a run is advanced by the replica holding its lease, taken by a
   conditional UPDATE, so two replicas never both advance one run;
3. *advance*: a run resolves its targets when it starts (groups and agent
   ids as they are then), then sends, within the cap: Wake-on-LAN first for
   a target that is not online (``options.wol``), a wake-up once it comes
   online or ``settle`` seconds have passed, a wake-up at once for the
   others. Wake-ups go through ``Wakeups.request`` like any other, in
   batches under an Idempotency-Key kept with the targets, so a batch a
   crash cut short is sent again as the same wake-up, never twice; their
   TTL ends with the window. Targets still queued when the window ends are
   ``not_sent``: counted and named in the report, not dropped silently.

All state is in the database, so a restarted server (or another replica,
once the lease runs out) carries on where the last round stopped.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.campaign_schedule import (
    Clock,
    Schedule,
    describe,
    due,
    local_text,
    next_slot,
    parse_schedule,
    slots_after,
)
from epns.errors import BadRequest, Conflict, NotFound, RequestError
from epns.logs import event
from epns.pacing import Cap, admit, eta
from epns.server_config import CampaignSettings
from epns.wakeup import PENDING_STATES
from server_push.fleet.bus import Bus
from server_push.fleet.registry import Registry
from server_push.fleet.wakeups import WakeRequest, Wakeups
from server_push.fleet.wol import MAX_TARGETS_PER_REQUEST, TargetSpec, WolAsk, WolDispatch
from server_push.link.metrics import CampaignCounts
from server_push.store.history import audit, settle_audit
from server_push.store.models import (
    Agent,
    Campaign,
    CampaignRun,
    CampaignTarget,
    WakeTarget,
    Wakeup,
    WolRequest,
)

log = logging.getLogger(__name__)

AUDIT_RUN = "campaign_run"
# Runs: pending (waiting for its first round) -> running -> done; or missed.
ACTIVE = ("pending", "running")
# Target phases that still wait for the scheduler.
WAITING = ("queued", "wol_sent", "wake_queued", "wake_sending")
PREVIEW_RUNS = 5
MAX_NAMED_AGENTS = 10_000
# The longest a run may wait for machines woken by WoL before it wakes them anyway.
MAX_SETTLE = 3600.0


class SystemClock:
    """The real time."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()


@dataclass(frozen=True)
class CampaignSpec:
    """What an admin asks for (the API's body, checked)."""

    name: str
    schedule: Schedule
    groups: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    enabled: bool = True
    wol: bool = False
    settle: float = 120.0
    wol_addresses: tuple[str, ...] = ()
    wol_ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.groups and not self.agents:
            raise BadRequest("name at least one group or agent in targets", code="no_targets")
        if len(self.agents) > MAX_NAMED_AGENTS:
            raise BadRequest(f"at most {MAX_NAMED_AGENTS} agents by name; use groups",
                             code="too_many_agents")
        if not 0 <= self.settle <= MAX_SETTLE:
            raise BadRequest(f"options.settle must be 0 to {MAX_SETTLE:.0f} seconds",
                             code="invalid_settle")

    def targets(self) -> dict[str, Any]:
        """The JSON kept in ``campaigns.targets``."""
        return {"groups": list(self.groups), "agents": list(self.agents)}

    def options(self) -> dict[str, Any]:
        """The JSON kept in ``campaigns.options``."""
        return {"wol": self.wol, "settle": self.settle,
                "wol_addresses": list(self.wol_addresses), "wol_ports": list(self.wol_ports)}


def schedule_of(row: Campaign) -> Schedule:
    """A stored campaign's schedule."""
    data = row.schedule
    return parse_schedule(data["kind"], data["at"], data["timezone"], float(data["window"]),
                          data.get("days") or ())


def preview(schedule: Schedule, now: float, count: int = PREVIEW_RUNS) -> dict[str, Any]:
    """What the console's form shows: the words and the next slots."""
    slots = slots_after(schedule, now, count)
    return {"description": describe(schedule), "next_runs": slots,
            "next_runs_local": [local_text(slot, schedule.timezone) for slot in slots]}


@dataclass
class Pacing:
    """The cap as it stands, for the API and the console."""

    cap: Cap
    used: int
    queued: int
    eta: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON."""
        return {"cap": self.cap.text(), "limit": self.cap.limit, "interval": self.cap.interval,
                "used": self.used, "queued": self.queued, "eta": self.eta}


class Campaigns:
    """Campaigns, their runs, the scheduler and the reports."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, wakeups: Wakeups,
                 wol: WolDispatch, registry: Registry, bus: Bus, settings: CampaignSettings,
                 max_ttl: float, counts: CampaignCounts, clock: Clock | None = None,
                 replica: str = "") -> None:
        self._sessions = sessions
        self._wakeups = wakeups
        self._wol = wol
        self._registry = registry
        self._bus = bus
        self._settings = settings
        self._max_ttl = max_ttl
        self.clock: Clock = clock or SystemClock()
        self._replica = replica or uuid.uuid4().hex[:12]
        self.cap = Cap(settings.cap, settings.cap_interval)
        self.gauges = counts

    # --- campaigns -----------------------------------------------------------

    async def create(self, actor: str, spec: CampaignSpec) -> dict[str, Any]:
        """A new campaign; its first run is its schedule's next slot."""
        now = self.clock.now()
        row = Campaign(id=uuid.uuid4().hex, name=spec.name, targets=spec.targets(),
                       schedule=spec.schedule.as_dict(), options=spec.options(),
                       enabled=spec.enabled, created_at=now, created_by=actor, updated_at=now,
                       checked_until=now, next_run_at=next_slot(spec.schedule, now))
        async with self._sessions() as session, session.begin():
            session.add(row)
            audit(session, at=now, actor=actor, action="campaign_create",
                  targets=[*spec.groups, *spec.agents], outcome=describe(spec.schedule),
                  ref=row.id)
        event(log, "campaign_created", id=row.id, by=actor, schedule=describe(spec.schedule))
        self._notify(row.id)
        return await self.get(row.id)

    async def update(self, campaign_id: str, actor: str, spec: CampaignSpec) -> dict[str, Any]:
        """Replace a campaign's definition (a run under way keeps the targets
        it resolved). Slots while it was paused are not missed runs: an admin
        chose to skip them."""
        now = self.clock.now()
        async with self._sessions() as session, session.begin():
            row = await self._campaign(session, campaign_id)
            row.name = spec.name
            row.targets = spec.targets()
            row.schedule = spec.schedule.as_dict()
            row.options = spec.options()
            row.enabled = spec.enabled
            row.updated_at = now
            # An edited (or resumed) campaign counts its slots from now: the
            # ones before the edit, or while it was paused, are not owed.
            row.checked_until = max(row.checked_until, now)
            row.next_run_at = next_slot(spec.schedule, row.checked_until)
            audit(session, at=now, actor=actor, action="campaign_update",
                  targets=[*spec.groups, *spec.agents],
                  outcome=("enabled: " if spec.enabled else "paused: ")
                  + describe(spec.schedule), ref=campaign_id)
        self._notify(campaign_id)
        return await self.get(campaign_id)

    async def delete(self, campaign_id: str, actor: str) -> None:
        """Stop a campaign for good: no more runs; a run under way ends at
        the next round (its queued targets not_sent); runs and reports kept."""
        now = self.clock.now()
        async with self._sessions() as session, session.begin():
            row = await self._campaign(session, campaign_id)
            row.deleted_at = now
            row.enabled = False
            row.next_run_at = None
            audit(session, at=now, actor=actor, action="campaign_delete", targets=[],
                  outcome=f"deleted {row.name!r}", ref=campaign_id)
        self._notify(campaign_id)

    async def run_now(self, campaign_id: str, actor: str) -> dict[str, Any]:
        """Start a run by hand, now, with the schedule's window; 409 while one is under way."""
        now = self.clock.now()
        async with self._sessions() as session, session.begin():
            row = await self._campaign(session, campaign_id)
            if await self._active_run(session, campaign_id) is not None:
                raise Conflict(f"campaign {row.name!r} has a run under way; wait for it to "
                               "end", code="run_in_progress")
            run = self._new_run(row, now, "manual", actor, now)
            session.add(run)
            audit(session, at=now, actor=actor, action=AUDIT_RUN, targets=[],
                  outcome=f"started by hand: {row.name}", ref=run.id)
        event(log, "campaign_run_requested", campaign=campaign_id, run=run.id, by=actor)
        self._notify(campaign_id, run.id)
        return await self.report(run.id)

    async def get(self, campaign_id: str) -> dict[str, Any]:
        """One campaign (deleted ones too) with its next runs and latest run."""
        async with self._sessions() as session:
            row = await session.get(Campaign, campaign_id)
            if row is None:
                raise NotFound(f"no campaign {campaign_id!r}", code="unknown_campaign")
            latest = await session.scalar(select(CampaignRun).where(
                CampaignRun.campaign_id == campaign_id, CampaignRun.state != "missed")
                .order_by(CampaignRun.created_at.desc()).limit(1))
            summary = None if latest is None else await self._run_view(session, latest)
        return self._campaign_view(row, summary)

    async def all(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every campaign, by name."""
        async with self._sessions() as session:
            query = select(Campaign).order_by(Campaign.name, Campaign.id)
            if not include_deleted:
                query = query.where(Campaign.deleted_at.is_(None))
            rows = (await session.scalars(query)).all()
            views = []
            for row in rows:
                latest = await session.scalar(select(CampaignRun).where(
                    CampaignRun.campaign_id == row.id, CampaignRun.state != "missed")
                    .order_by(CampaignRun.created_at.desc()).limit(1))
                views.append(self._campaign_view(
                    row, None if latest is None else await self._run_view(session, latest)))
        return views

    def _campaign_view(self, row: Campaign, latest: dict[str, Any] | None) -> dict[str, Any]:
        schedule = schedule_of(row)
        shown = preview(schedule, max(self.clock.now(), row.checked_until))
        if not row.enabled:
            shown["next_runs"], shown["next_runs_local"] = [], []
        return {"id": row.id, "name": row.name, "targets": row.targets,
                "schedule": row.schedule, "options": row.options, "enabled": row.enabled,
                "created_at": row.created_at, "created_by": row.created_by,
                "updated_at": row.updated_at, "deleted_at": row.deleted_at,
                "next_run_at": row.next_run_at if row.enabled else None, **shown,
                "latest_run": latest}

    async def runs(self, campaign_id: str, *, limit: int, offset: int
                   ) -> tuple[list[dict[str, Any]], int]:
        """A campaign's runs, newest first, with their counts."""
        async with self._sessions() as session:
            await self._campaign(session, campaign_id)
            where = CampaignRun.campaign_id == campaign_id
            total = await session.scalar(select(func.count()).select_from(CampaignRun)
                                         .where(where)) or 0
            rows = (await session.scalars(select(CampaignRun).where(where)
                                          .order_by(CampaignRun.slot.desc(),
                                                    CampaignRun.id.desc())
                                          .offset(offset).limit(limit))).all()
            return [await self._run_view(session, row) for row in rows], total

    async def report(self, run_id: str, *, limit: int | None = None,
                     offset: int = 0) -> dict[str, Any]:
        """A run with its counts, the cap while it runs, and its targets by
        agent id (``limit`` of them from ``offset``; all when None)."""
        async with self._sessions() as session:
            run = await session.get(CampaignRun, run_id)
            if run is None:
                raise NotFound(f"no campaign run {run_id!r}", code="unknown_campaign_run")
            view = await self._run_view(session, run)
            targets = (await session.scalars(
                select(CampaignTarget).where(CampaignTarget.run_id == run_id)
                .order_by(CampaignTarget.agent_id).offset(offset).limit(limit))).all()
            states = await _wake_states(session, run_id, None if limit is None else [
                t.agent_id for t in targets])
            if run.state in ACTIVE:
                view["pacing"] = (await self._pacing(session, self.clock.now())).as_dict()
        view["targets"] = []
        for target in targets:
            state, satisfied_at, delivered_at = states.get(
                (target.wakeup_id, target.agent_id), (None, None, None))
            view["targets"].append({
                "agent_id": target.agent_id, "presence_at_start": target.presence,
                "outcome": _outcome(target.phase, state), "phase": target.phase,
                "wol_request_id": target.wol_request_id, "wol_sent_at": target.wol_sent_at,
                "woke_at": target.woke_at, "wakeup_id": target.wakeup_id,
                "wake_sent_at": target.wake_sent_at, "delivered_at": delivered_at,
                "synced_at": satisfied_at, "detail": target.detail})
        return view

    async def _run_view(self, session: AsyncSession, run: CampaignRun) -> dict[str, Any]:
        name = await session.scalar(select(Campaign.name).where(Campaign.id == run.campaign_id))
        return {"id": run.id, "campaign_id": run.campaign_id, "campaign": name,
                "trigger": run.trigger, "slot": run.slot, "window_end": run.window_end,
                "state": run.state, "requested_by": run.requested_by,
                "created_at": run.created_at, "started_at": run.started_at,
                "finished_at": run.finished_at, "detail": run.detail,
                "counts": await _counts(session, run.id)}

    @staticmethod
    async def _campaign(session: AsyncSession, campaign_id: str) -> Campaign:
        row = await session.get(Campaign, campaign_id)
        if row is None or row.deleted_at is not None:
            raise NotFound(f"no campaign {campaign_id!r}", code="unknown_campaign")
        return row

    @staticmethod
    async def _active_run(session: AsyncSession, campaign_id: str) -> str | None:
        found: str | None = await session.scalar(select(CampaignRun.id).where(
            CampaignRun.campaign_id == campaign_id, CampaignRun.state.in_(ACTIVE)).limit(1))
        return found

    @staticmethod
    def _new_run(row: Campaign, slot: float, trigger: str, actor: str, now: float, *,
                 state: str = "pending", detail: str = "") -> CampaignRun:
        window = float(row.schedule["window"])
        return CampaignRun(id=uuid.uuid4().hex, campaign_id=row.id, trigger=trigger, slot=slot,
                           window_end=slot + window, state=state, requested_by=actor,
                           created_at=now, detail=detail,
                           finished_at=now if state == "missed" else None)

    # --- the scheduler -------------------------------------------------------

    async def run_scheduler(self) -> None:
        """A round every ``tick`` seconds, until cancelled."""
        while True:
            try:
                await self.round()
            except Exception as exc:  # the scheduler must outlive a bad round
                event(log, "campaign_round_failed", logging.ERROR, error=repr(exc))
            await asyncio.sleep(self._settings.tick)

    async def round(self) -> None:
        """Plan due runs, then advance every run this replica can claim."""
        now = self.clock.now()
        await self._plan(now)
        queued = running = 0
        for run_id in await self._claim(now):
            waiting = await self._advance(run_id, self.clock.now())
            if waiting is not None:
                running += 1
                queued += waiting
        self.gauges.running, self.gauges.queued = running, queued

    async def _plan(self, now: float) -> None:
        async with self._sessions() as session:
            rows = (await session.scalars(select(Campaign).where(
                Campaign.enabled.is_(True), Campaign.deleted_at.is_(None),
                Campaign.next_run_at.is_not(None), Campaign.next_run_at <= now))).all()
        for row in rows:
            await self._plan_one(row, now)

    async def _plan_one(self, row: Campaign, now: float) -> None:
        found = due(schedule_of(row), row.checked_until, now)
        async with self._sessions() as session, session.begin():
            # Only one replica hands out these slots: the one whose UPDATE
            # still finds checked_until where it read it.
            taken = await session.execute(
                update(Campaign).where(Campaign.id == row.id,
                                       Campaign.checked_until == row.checked_until)
                .values(checked_until=now, next_run_at=found.next))
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return
            busy = await self._active_run(session, row.id)
            for slot in found.missed:
                session.add(self._new_run(row, slot, "schedule", "scheduler", now, state="missed",
                                          detail="the server was not running at this time and its "
                                          "window closed before it was back"))
            if found.missed_more:
                event(log, "campaign_runs_missed", campaign=row.id,
                      count=found.missed_more + len(found.missed))
            if found.run is not None and busy is not None:
                session.add(self._new_run(row, found.run, "schedule", "scheduler", now,
                                          state="missed", detail=f"run {busy} was still under way"))
            elif found.run is not None:
                late = now - found.run
                run = self._new_run(row, found.run, "schedule", "scheduler", now, detail=(
                    f"started {late:.0f} s late, inside its window" if late > 60 else ""))
                session.add(run)
                audit(session, at=now, actor="scheduler", action=AUDIT_RUN, targets=[],
                      outcome=f"scheduled: {row.name}", ref=run.id)
        self.gauges.runs["missed"] += len(found.missed) + found.missed_more + (
            1 if found.run is not None and busy is not None else 0)
        self._notify(row.id)

    async def _claim(self, now: float) -> list[str]:
        """The active runs this replica holds the lease of, now. A conditional
        UPDATE: on PostgreSQL two replicas racing for one run see one row
        count each, one of them 0; on SQLite writers are serialised anyway."""
        async with self._sessions() as session:
            candidates = (await session.scalars(select(CampaignRun.id).where(
                CampaignRun.state.in_(ACTIVE)).order_by(CampaignRun.created_at))).all()
        held = []
        for run_id in candidates:
            async with self._sessions() as session, session.begin():
                claimed = await session.execute(
                    update(CampaignRun).where(
                        CampaignRun.id == run_id, CampaignRun.state.in_(ACTIVE),
                        or_(CampaignRun.claimed_by.is_(None),
                            CampaignRun.claimed_by == self._replica,
                            CampaignRun.lease_until < now))
                    .values(claimed_by=self._replica, lease_until=now + self._settings.lease))
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                held.append(run_id)
        return held

    # --- a run ---------------------------------------------------------------

    async def _advance(self, run_id: str, now: float) -> int | None:
        """One round of one run; how many targets still wait (None: it ended)."""
        async with self._sessions() as session:
            run = await session.get(CampaignRun, run_id)
            campaign = None if run is None else await session.get(Campaign, run.campaign_id)
        if run is None or campaign is None:
            return None
        if run.state == "pending" and not await self._start(run, campaign, now):
            return None
        await self._resend_batches(run, campaign)
        if campaign.deleted_at is not None or now >= run.window_end:
            reason = ("the campaign was deleted" if campaign.deleted_at is not None
                      else "the window ended before the cap let it go")
            await self._give_up(run, now, reason)
        else:
            await self._settled(run, campaign, now)
            await self._send(run, campaign, now)
        return await self._maybe_finish(run, campaign, now)

    async def _start(self, run: CampaignRun, campaign: Campaign, now: float) -> bool:
        """Resolve the targets as they are now; False when the run ended at once."""
        wanted = campaign.targets
        groups = set(wanted.get("groups") or ())
        named = list(dict.fromkeys(wanted.get("agents") or ()))
        async with self._sessions() as session, session.begin():
            rows = (await session.scalars(select(Agent).where(Agent.retired_at.is_(None)))).all()
            known = {row.id: row for row in rows}
            chosen = [row for row in rows if row.revoked_at is None and (
                row.id in named or groups.intersection(row.groups or ()))]
            notes = []
            unknown = [name for name in named if name not in known]
            if unknown:
                notes.append(f"unknown or retired agents left out: {', '.join(unknown[:20])}")
            revoked = [name for name in named if name in known and known[name].revoked_at]
            if revoked:
                notes.append(f"revoked agents left out: {', '.join(revoked[:20])}")
            if chosen:
                await session.execute(insert(CampaignTarget), [
                    {"run_id": run.id, "agent_id": row.id, "phase": "queued",
                     "presence": self._registry.view(row, time.time()).presence, "detail": ""}
                    for row in sorted(chosen, key=lambda r: r.id)])
            state = "running" if chosen else "done"
            if not chosen:
                notes.append("no agent matched the targets when the run started")
            detail = "; ".join(filter(None, [run.detail, *notes]))
            await session.execute(update(CampaignRun).where(CampaignRun.id == run.id).values(
                state=state, started_at=now, detail=detail,
                finished_at=None if chosen else now))
            if not chosen:
                await settle_audit(session, action=AUDIT_RUN, ref=run.id,
                                   outcome=f"done: {campaign.name}, no targets")
        run.state, run.started_at, run.detail = state, now, detail
        event(log, "campaign_run_started", campaign=campaign.id, run=run.id,
              targets=len(chosen))
        self._notify(campaign.id, run.id)
        if not chosen:
            self.gauges.runs["done"] += 1
        return bool(chosen)

    async def _resend_batches(self, run: CampaignRun, campaign: Campaign) -> None:
        """Wake-up batches a crash cut short, sent again under their key: the
        same wake-up if it was made, or made now."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(CampaignTarget).where(
                CampaignTarget.run_id == run.id, CampaignTarget.phase == "wake_sending"))).all()
        batches: dict[str, list[CampaignTarget]] = {}
        for row in rows:
            batches.setdefault(row.wake_key or "", []).append(row)
        for key, targets in batches.items():
            await self._request_wake(run, campaign, key, targets[0].wake_ttl or 1.0,
                                     [t.agent_id for t in targets])

    async def _give_up(self, run: CampaignRun, now: float, reason: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(update(CampaignTarget).where(
                CampaignTarget.run_id == run.id,
                CampaignTarget.phase.in_(("queued", "wol_sent", "wake_queued")))
                .values(phase="not_sent", detail=reason))

    async def _settled(self, run: CampaignRun, campaign: Campaign, now: float) -> None:
        """Targets woken by WoL: online now, or past their settle time, go on to a wake-up."""
        settle = float(campaign.options.get("settle", 0.0))
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(
                select(CampaignTarget, Agent).join(Agent, Agent.id == CampaignTarget.agent_id)
                .where(CampaignTarget.run_id == run.id,
                       CampaignTarget.phase == "wol_sent"))).all()
            for target, agent in rows:
                if self._registry.view(agent, time.time()).presence == "online":
                    target.phase, target.woke_at = "wake_queued", now
                elif now >= (target.wol_sent_at or now) + settle:
                    target.phase = "wake_queued"
                    target.detail = (f"not online {settle:g} s after Wake-on-LAN; woken "
                                     "anyway (the command waits for it until the window ends)")

    async def _send(self, run: CampaignRun, campaign: Campaign, now: float) -> None:
        """Send what the cap allows: targets waiting for their wake-up first,
        then the queued ones in agent order."""
        async with self._sessions() as session:
            waiting = (await session.scalars(select(CampaignTarget).where(
                CampaignTarget.run_id == run.id,
                CampaignTarget.phase.in_(("wake_queued", "queued")))
                .order_by(CampaignTarget.phase.desc(), CampaignTarget.id)
                # No round sends more than the cap: a run of 10,000 reads 1,000.
                .limit(self.cap.limit))).all()
            if not waiting:
                return
            sends = await _recent_sends(session, now, self.cap.interval)
        granted = admit(self.cap, sends, now, len(waiting)).granted
        chosen = list(waiting[:granted])
        if not chosen:
            return
        wol_wanted = bool(campaign.options.get("wol"))
        to_wake: list[str] = [t.agent_id for t in chosen if t.phase == "wake_queued"]
        fresh = [t for t in chosen if t.phase == "queued"]
        if fresh and wol_wanted:
            async with self._sessions() as session:
                agents = {row.id: row for row in (await session.scalars(select(Agent).where(
                    Agent.id.in_([t.agent_id for t in fresh])))).all()}
            offline = []
            for target in fresh:
                agent = agents.get(target.agent_id)
                if agent is not None and self._registry.view(
                        agent, time.time()).presence == "online":
                    to_wake.append(target.agent_id)
                else:
                    offline.append(target)
            to_wake += await self._send_wol(campaign, offline, now)
        else:
            to_wake += [t.agent_id for t in fresh]
        if to_wake:
            ttl = min(self._max_ttl, run.window_end - now)
            if ttl < 1.0:
                return
            key = f"campaign-run:{run.id}:{uuid.uuid4().hex[:12]}"
            async with self._sessions() as session, session.begin():
                await session.execute(update(CampaignTarget).where(
                    CampaignTarget.run_id == run.id, CampaignTarget.agent_id.in_(to_wake))
                    .values(phase="wake_sending", wake_key=key, wake_ttl=ttl))
            await self._request_wake(run, campaign, key, ttl, to_wake)

    async def _send_wol(self, campaign: Campaign, targets: Sequence[CampaignTarget],
                        now: float) -> list[str]:
        """Wake-on-LAN through the relay path for ``targets``, up to
        ``MAX_TARGETS_PER_REQUEST`` per request (each request elects relays
        from every online agent); returns the agents it could not be sent for
        (no MAC known, ...), to be woken by push alone."""
        if not targets:
            return []
        # Marked sent before the requests: a crash in between leaves targets
        # that wait their settle time, never a second WoL request.
        async with self._sessions() as session, session.begin():
            await session.execute(update(CampaignTarget).where(
                CampaignTarget.id.in_([t.id for t in targets]))
                .values(phase="wol_sent", wol_sent_at=now))
        refused: list[str] = []
        chunks = [list(targets[at:at + MAX_TARGETS_PER_REQUEST])
                  for at in range(0, len(targets), MAX_TARGETS_PER_REQUEST)]
        while chunks:
            chunk = chunks.pop()
            error = await self._wol_request(campaign, chunk)
            if error is None:
                continue
            if len(chunk) > 1:  # one bad target refuses the request: try each alone
                chunks += [[target] for target in chunk]
                continue
            refused.append(chunk[0].agent_id)
            async with self._sessions() as session, session.begin():
                await session.execute(update(CampaignTarget).where(
                    CampaignTarget.id == chunk[0].id).values(
                    phase="queued", wol_sent_at=None, detail=f"no Wake-on-LAN: {error}"))
        return refused

    async def _wol_request(self, campaign: Campaign, chunk: Sequence[CampaignTarget]
                           ) -> str | None:
        """One WoL request for ``chunk``; the refusal's words, or None when sent."""
        options = campaign.options
        ask = WolAsk(tuple(TargetSpec(agent=t.agent_id) for t in chunk),
                     tuple(options.get("wol_addresses") or ()),
                     tuple(int(p) for p in options.get("wol_ports") or ()))
        try:
            views = await self._wol.request(_actor(campaign.id), ask)
        except RequestError as exc:
            return exc.detail
        async with self._sessions() as session, session.begin():
            for target, view in zip(chunk, views, strict=True):
                await session.execute(update(CampaignTarget).where(
                    CampaignTarget.id == target.id).values(wol_request_id=view.id))
        self.gauges.sends["wol"] += len(chunk)
        return None

    async def _request_wake(self, run: CampaignRun, campaign: Campaign, key: str, ttl: float,
                            agent_ids: Sequence[str]) -> None:
        """One wake-up for ``agent_ids`` under ``key``; agents it cannot take
        (revoked since the run started) are tried alone, and what fails is not_sent."""
        actor = _actor(campaign.id)
        try:
            view, _ = await self._wakeups.request(actor, WakeRequest(
                kind="agents", agents=tuple(agent_ids), ttl=ttl, idempotency_key=key))
        except RequestError as exc:
            if len(agent_ids) == 1:
                async with self._sessions() as session, session.begin():
                    await session.execute(update(CampaignTarget).where(
                        CampaignTarget.run_id == run.id,
                        CampaignTarget.agent_id == agent_ids[0]).values(
                        phase="not_sent", detail=f"wake-up refused: {exc.detail}"))
                return
            for agent_id in agent_ids:
                single = f"{key}.{agent_id}"[:64]
                async with self._sessions() as session, session.begin():
                    await session.execute(update(CampaignTarget).where(
                        CampaignTarget.run_id == run.id, CampaignTarget.agent_id == agent_id)
                        .values(wake_key=single))
                await self._request_wake(run, campaign, single, ttl, [agent_id])
            return
        async with self._sessions() as session, session.begin():
            await session.execute(update(CampaignTarget).where(
                CampaignTarget.run_id == run.id, CampaignTarget.wake_key == key)
                .values(phase="wake_sent", wakeup_id=view.id, wake_sent_at=view.created_at))
        self.gauges.sends["wake"] += len(agent_ids)
        event(log, "campaign_wakeup_sent", run=run.id, wakeup=view.id, agents=len(agent_ids))
        self._notify(campaign.id, run.id)

    async def _maybe_finish(self, run: CampaignRun, campaign: Campaign, now: float
                            ) -> int | None:
        """End the run when no target waits and no wake-up it sent is pending."""
        async with self._sessions() as session, session.begin():
            waiting = await session.scalar(select(func.count()).select_from(CampaignTarget)
                                           .where(CampaignTarget.run_id == run.id,
                                                  CampaignTarget.phase.in_(WAITING))) or 0
            pending = await session.scalar(select(WakeTarget.id).where(
                WakeTarget.wakeup_id.in_(_run_wakeups(run.id)),
                WakeTarget.state.in_(PENDING_STATES)).limit(1))
            if waiting or pending is not None:
                await session.execute(update(CampaignRun).where(CampaignRun.id == run.id)
                                      .values(lease_until=now + self._settings.lease))
                self._notify(campaign.id, run.id)
                return waiting
            counts = await _counts(session, run.id)
            await session.execute(update(CampaignRun).where(CampaignRun.id == run.id).values(
                state="done", finished_at=now, claimed_by=None, lease_until=None))
            words = _summary(counts)
            await settle_audit(session, action=AUDIT_RUN, ref=run.id,
                               outcome=f"done: {campaign.name}: {words}")
        self.gauges.runs["done"] += 1
        event(log, "campaign_run_done", campaign=campaign.id, run=run.id, summary=words)
        self._notify(campaign.id, run.id)
        return None

    # --- the cap -------------------------------------------------------------

    async def pacing(self) -> Pacing:
        """The cap as it stands now, with every campaign's queued targets."""
        async with self._sessions() as session:
            return await self._pacing(session, self.clock.now())

    async def _pacing(self, session: AsyncSession, now: float) -> Pacing:
        sends = await _recent_sends(session, now, self.cap.interval)
        queued = await session.scalar(
            select(func.count()).select_from(CampaignTarget).join(
                CampaignRun, CampaignRun.id == CampaignTarget.run_id)
            .where(CampaignRun.state.in_(ACTIVE),
                   CampaignTarget.phase.in_(("queued", "wake_queued")))) or 0
        used = sum(1 for t in sends if now - self.cap.interval < t <= now)
        return Pacing(self.cap, used, queued,
                      eta(self.cap, sends, now, queued) if queued else None)

    def _notify(self, campaign_id: str, run_id: str | None = None) -> None:
        self._bus.publish({"kind": "campaign", "id": campaign_id, "run": run_id})


def _actor(campaign_id: str) -> str:
    return f"campaign:{campaign_id}"


async def _recent_sends(session: AsyncSession, now: float, interval: float) -> list[float]:
    """The times of every send (a wake-up's target, a Wake-on-LAN request)
    in the last ``interval``: campaign and ad-hoc alike, read from their rows."""
    since = now - interval
    wakes = (await session.execute(
        select(Wakeup.created_at, func.count(WakeTarget.id))
        .join(WakeTarget, WakeTarget.wakeup_id == Wakeup.id)
        .where(Wakeup.created_at > since).group_by(Wakeup.id, Wakeup.created_at))).all()
    packets = (await session.scalars(select(WolRequest.created_at).where(
        WolRequest.created_at > since))).all()
    return [at for at, count in wakes for _ in range(count)] + list(packets)


def _run_wakeups(run_id: str) -> Any:
    """The wake-ups a run sent, as a subquery. Each holds exactly the targets
    of one batch (a batch's key names its agents), so they are the run's
    wake targets, found through the index on wakeup_id: a join on
    (wakeup_id, agent_id) made SQLite scan each wake-up per target, 1.5 s of
    CPU for a run of 10,000."""
    return (select(CampaignTarget.wakeup_id).where(CampaignTarget.run_id == run_id,
                                                    CampaignTarget.wakeup_id.is_not(None))
            .distinct().scalar_subquery())


async def _wake_states(session: AsyncSession, run_id: str, agent_ids: Sequence[str] | None
                       ) -> dict[tuple[str | None, str], tuple[str | None, float | None,
                                                               float | None]]:
    """The wake targets of ``agent_ids`` (None: all) in a run, by (wakeup,
    agent): state, satisfied at, delivered at."""
    query = select(WakeTarget.wakeup_id, WakeTarget.agent_id, WakeTarget.state,
                   WakeTarget.satisfied_at, WakeTarget.delivered_at).where(
        WakeTarget.wakeup_id.in_(_run_wakeups(run_id)))
    if agent_ids is not None:
        if not agent_ids:
            return {}
        query = query.where(WakeTarget.agent_id.in_(list(agent_ids)))
    rows = (await session.execute(query)).all()
    return {(row[0], row[1]): (row[2], row[3], row[4]) for row in rows}


async def _counts(session: AsyncSession, run_id: str) -> dict[str, int]:
    """A run's targets by outcome, and how many got Wake-on-LAN and woke."""
    phases = (await session.execute(
        select(CampaignTarget.phase, func.count(), func.count(CampaignTarget.wol_request_id),
               func.count(CampaignTarget.woke_at))
        .where(CampaignTarget.run_id == run_id).group_by(CampaignTarget.phase))).all()
    states = (await session.execute(
        select(WakeTarget.state, func.count())
        .where(WakeTarget.wakeup_id.in_(_run_wakeups(run_id)))
        .group_by(WakeTarget.state))).all()
    counts: Counter[str] = Counter(dict.fromkeys((
        "targets", "queued", "wol_sent", "woke", "wake_sent", "synced", "waiting",
        "expired", "cancelled", "not_sent"), 0))
    for phase, number, wol, woke in phases:
        counts["targets"] += number
        counts["wol_sent"] += wol
        counts["woke"] += woke
        if phase == "wake_sent":
            counts["wake_sent"] += number
        elif phase in WAITING:
            counts["queued"] += number
        else:
            counts[phase] += number
    for state, number in states:
        outcome = _outcome("wake_sent", state)
        counts["waiting" if outcome in ("requested", "delivered") else outcome] += number
    return dict(counts)


def _outcome(phase: str, state: str | None) -> str:
    """One target's outcome: synced, the wake-up's state, or where it waits."""
    if phase != "wake_sent":
        return phase
    if state == "satisfied":
        return "synced"
    return state or "wake_sent"


def _summary(counts: dict[str, int]) -> str:
    total = counts.get("targets", 0)
    return (f"synced {counts.get('synced', 0)}/{total}, expired {counts.get('expired', 0)}, "
            f"cancelled {counts.get('cancelled', 0)}, not sent {counts.get('not_sent', 0)}, "
            f"Wake-on-LAN {counts.get('wol_sent', 0)} (woke {counts.get('woke', 0)})")


_CSV_COLUMNS = ("agent_id", "outcome", "presence_at_start", "wol_sent_at", "woke_at",
                "wake_sent_at", "delivered_at", "synced_at", "wakeup_id", "detail")
# OWASP's list: a cell starting so could run as a spreadsheet formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def report_csv(targets: list[dict[str, Any]]) -> str:
    """A report's targets as CSV (times in UTC ISO 8601)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(_CSV_COLUMNS)
    for target in targets:
        row = []
        for column in _CSV_COLUMNS:
            value = target.get(column)
            if isinstance(value, float):
                value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
            text = "" if value is None else str(value)
            row.append("'" + text if text.startswith(_FORMULA_STARTS) else text)
        writer.writerow(row)
    return out.getvalue()
