"""What the server does with each message from the broker: presence into the
registry, acks and syncs into the wake-up records, WoL results to the WoL
dispatcher. A message some replica (or this one, for a QoS 1 redelivery) has
already claimed is dropped (``handled.py``).

Any agent may be compromised, so what it sends is checked at this edge
(``epns.envelope`` with ``epns.fields``) before anything touches the
database, and each agent has a budget of messages per minute
(``budgets.events_per_minute``). A message that fails either is dropped,
counted (``epns_server_agent_messages_dropped_total``) and logged at most
once per agent, cause and ``LOG_INTERVAL``; the agent's next messages, and
every other agent's, go on. The broker link isolates whatever else a handler
raises (``mqtt_link.py``)."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from epns import topics
from epns.envelope import Event, EventType, decode_event, decode_presence
from epns.errors import MessageError
from epns.logs import Throttle, event
from epns.wakeup import ClockOffset, best_offset, clock_offset, server_time
from server_push.fleet.registry import Registry
from server_push.fleet.wakeups import Wakeups
from server_push.link.metrics import ServerMetrics
from server_push.security.ratelimit import RateLimiter
from server_push.store.handled import HandledEvents

log = logging.getLogger(__name__)

# One line per agent and cause at most this often: a flood from one agent
# must not become a flood in the log.
LOG_INTERVAL = 60.0


class WolTracker(Protocol):
    """What the dispatcher tells the Wake-on-LAN side."""

    async def on_agent_online(self, agent_id: str, now: float) -> None:
        """An agent came online: a WoL target may have woken."""

    async def on_result(self, agent_id: str, ref: str | None, body: dict[str, Any],
                        now: float) -> None:
        """A relay reported what it sent."""


class KeepAwakeTracker(Protocol):
    """What the dispatcher tells keep-awake (``fleet/keep_awake.py``)."""

    def poke(self) -> None:
        """Presence changed: elect again soon."""

    async def on_report(self, agent_id: str, body: dict[str, Any], now: float) -> None:
        """An agent said whether it holds sleep off."""


class Dispatcher:
    """Routes broker messages; ``handle`` is the broker link's message handler."""

    def __init__(self, registry: Registry, wakeups: Wakeups, wol: WolTracker,
                 handled: HandledEvents, *, metrics: ServerMetrics,
                 events_per_minute: float, events_burst: int,
                 keep_awake: KeepAwakeTracker) -> None:
        self._keep_awake = keep_awake
        self._registry = registry
        self._wakeups = wakeups
        self._wol = wol
        self._handled = handled
        self._metrics = metrics
        self._budget = RateLimiter(events_per_minute, events_burst)
        self._throttle = Throttle(LOG_INTERVAL)
        # Per agent, the offset of its clock with the least transit in it.
        self._offsets: dict[str, ClockOffset] = {}

    async def handle(self, topic: str, raw: bytes) -> None:
        """Handle one message; never raises for a bad message."""
        parsed = topics.parse_agent_topic(topic)
        if parsed is None:
            event(log, "message_ignored", logging.WARNING, topic=topic, reason="not an agent topic")
            return
        now = time.time()
        agent_id = parsed.agent_id
        if not raw and parsed.channel is topics.AgentChannel.PRESENCE:
            return  # a retained message being cleared
        if self._budget.take(agent_id, now) > 0:
            self._dropped(agent_id, "over_budget", "more messages than budgets.events_per_minute",
                         now)
            return
        try:
            if parsed.channel is topics.AgentChannel.PRESENCE:
                presence = decode_presence(raw)
            else:
                report = decode_event(raw)
        except MessageError as exc:
            self._dropped(agent_id, "malformed", str(exc), now)
            return
        if (parsed.channel is not topics.AgentChannel.PRESENCE and report.type is EventType.SYNC
                and report.body["ok"] and self._wakeups.applied(agent_id,
                                                                report.body["sync_id"] or "")):
            # The sync's POST was applied here already (recorded, last seen,
            # targets satisfied) moments ago: one door to "satisfied" per
            # sync, and no write at all for the same news, not even the claim.
            return
        if (parsed.channel is not topics.AgentChannel.PRESENCE and report.type is EventType.ACK
                and report.ref is not None):
            await self._ack(topic, raw, agent_id, report, command_id=report.ref, now=now)
            return
        if not await self._handled.claim(topic, raw, now):
            event(log, "message_duplicate", logging.DEBUG, topic=topic)
            return
        if parsed.channel is topics.AgentChannel.PRESENCE:
            if await self._registry.on_presence(agent_id, presence, now):
                await self._wol.on_agent_online(agent_id, now)
            self._keep_awake.poke()
        else:
            await self._event(agent_id, report, now)

    def _dropped(self, agent_id: str, reason: str, detail: str, now: float) -> None:
        """Count a message from ``agent_id`` dropped for ``reason``, and log it
        unless this agent and cause were logged within ``LOG_INTERVAL``."""
        self._metrics.agent_messages_dropped[reason] += 1
        cause = detail.partition(":")[0]
        admitted, held = self._throttle.admit((agent_id, reason, cause), now)
        if admitted:
            event(log, "agent_message_dropped", logging.WARNING, agent=agent_id, reason=reason,
                  detail=detail, **({"similar_since_last_line": held} if held else {}))

    def _sample_clock(self, agent_id: str, report: Event, now: float) -> None:
        sample = clock_offset(agent_now=report.at, server_now=now)
        self._offsets[agent_id] = best_offset(self._offsets.get(agent_id), sample)

    async def _ack(self, topic: str, raw: bytes, agent_id: str, report: Event, *,
                   command_id: str, now: float) -> None:
        """An ack: its claim, the agent's last seen and its targets delivered,
        in one transaction (one commit, where there were three: each ack of a
        wake-all comes through here). A claim another replica (or this one,
        for a redelivery) holds already rolls it all back."""
        self._sample_clock(agent_id, report, now)
        known = True

        async def claimed_and_seen(session: AsyncSession) -> None:
            nonlocal known
            await self._handled.claim_in(session, topic, raw, now)
            known = await self._registry.touch_in(session, agent_id, now)

        try:
            await self._wakeups.on_ack(agent_id, command_id, now, joined=claimed_and_seen)
        except IntegrityError:
            event(log, "message_duplicate", logging.DEBUG, topic=topic)
            return
        if not known:
            # No row yet: registered now, in a transaction of its own.
            await self._registry.touch(agent_id, now)

    async def _event(self, agent_id: str, report: Event, now: float) -> None:
        body = dict(report.body)
        self._sample_clock(agent_id, report, now)
        if report.type is EventType.SYNC:
            await self._sync(agent_id, body, now)
        elif report.type is EventType.WOL_RESULT:
            await self._registry.touch(agent_id, now)
            await self._wol.on_result(agent_id, report.ref, body, now)
        elif report.type is EventType.KEEP_AWAKE:
            await self._registry.touch(agent_id, now)
            await self._keep_awake.on_report(agent_id, body, now)
        elif report.type is EventType.REJECT:
            await self._registry.remember(agent_id, now, "command_rejected", body["reason"])
        else:
            await self._registry.touch(agent_id, now)

    async def _sync(self, agent_id: str, body: dict[str, Any], now: float) -> None:
        """A sync the agent reports over MQTT (a sync action without HTTP);
        the body's fields were checked by ``epns.envelope``."""
        ok: bool = body["ok"]
        started = body["started_at"]
        if not ok or started is None:
            await self._registry.on_sync(agent_id, ok=ok, detail=body["detail"],
                                         reason=body["reason"], at=now)
            return
        # The registry's record and the satisfied targets in one transaction.
        record = functools.partial(self._registry.record_sync, agent_id=agent_id, ok=ok,
                                   detail=body["detail"], reason=body["reason"], at=now)
        started_at = server_time(started, self._offsets[agent_id])
        await self._wakeups.on_sync(agent_id, started_at=started_at,
                                    sync_id=body["sync_id"] or "", wakes=body["wakes"], now=now,
                                    joined=record)
        self._registry.announce(agent_id)
