"""What the server does with each message from the broker: presence into the
registry, acks and syncs into the wake-up records, WoL results to the WoL
dispatcher. A message that does not parse is logged and dropped; it never
stops the consumer. A message some replica (or this one, for a QoS 1
redelivery) has already claimed is dropped too (``handled.py``)."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from epns import topics
from epns.envelope import Event, EventType, decode_event, decode_presence
from epns.errors import MessageError
from epns.logs import event
from epns.wakeup import ClockOffset, best_offset, clock_offset, server_time
from server_push.handled import HandledEvents
from server_push.registry import Registry
from server_push.wakeups import Wakeups

log = logging.getLogger(__name__)


class WolTracker(Protocol):
    """What the dispatcher tells the Wake-on-LAN side."""

    async def on_agent_online(self, agent_id: str, now: float) -> None:
        """An agent came online: a WoL target may have woken."""

    async def on_result(self, agent_id: str, ref: str | None, body: dict[str, Any],
                        now: float) -> None:
        """A relay reported what it sent."""


class Dispatcher:
    """Routes broker messages; ``handle`` is the broker link's message handler."""

    def __init__(self, registry: Registry, wakeups: Wakeups, wol: WolTracker,
                 handled: HandledEvents) -> None:
        self._registry = registry
        self._wakeups = wakeups
        self._wol = wol
        self._handled = handled
        # Per agent, the offset of its clock with the least transit in it.
        self._offsets: dict[str, ClockOffset] = {}

    async def handle(self, topic: str, raw: bytes) -> None:
        """Handle one message; never raises for a bad message."""
        parsed = topics.parse_agent_topic(topic)
        if parsed is None:
            event(log, "message_ignored", logging.WARNING, topic=topic, reason="not an agent topic")
            return
        now = time.time()
        if not await self._handled.claim(topic, raw, now):
            event(log, "message_duplicate", logging.DEBUG, topic=topic)
            return
        try:
            if parsed.channel is topics.AgentChannel.PRESENCE:
                await self._presence(parsed.agent_id, raw, now)
            elif parsed.channel is topics.AgentChannel.EVT:
                await self._event(parsed.agent_id, decode_event(raw), now)
        except MessageError as exc:
            event(log, "message_rejected", logging.WARNING, topic=topic, reason=str(exc))

    async def _presence(self, agent_id: str, raw: bytes, now: float) -> None:
        if not raw:
            return  # a retained message being cleared
        if await self._registry.on_presence(agent_id, decode_presence(raw), now):
            await self._wol.on_agent_online(agent_id, now)

    async def _event(self, agent_id: str, report: Event, now: float) -> None:
        body = dict(report.body)
        sample = clock_offset(agent_now=report.at, server_now=now)
        self._offsets[agent_id] = best_offset(self._offsets.get(agent_id), sample)
        if report.type is EventType.ACK and report.ref is not None:
            await self._registry.touch(agent_id, now)
            await self._wakeups.on_ack(agent_id, report.ref, now)
        elif report.type is EventType.SYNC:
            await self._sync(agent_id, report, body, now)
        elif report.type is EventType.WOL_RESULT:
            await self._registry.touch(agent_id, now)
            await self._wol.on_result(agent_id, report.ref, body, now)
        elif report.type is EventType.REJECT:
            await self._registry.remember(agent_id, now, "command_rejected",
                                          str(body.get("reason", ""))[:500])
        else:
            await self._registry.touch(agent_id, now)

    async def _sync(self, agent_id: str, report: Event, body: dict[str, Any], now: float) -> None:
        ok = body.get("ok") is True
        detail = str(body.get("detail", ""))[:500]
        reason = str(body.get("reason", ""))[:32]
        await self._registry.on_sync(agent_id, ok=ok, detail=detail, reason=reason, at=now)
        started = body.get("started_at")
        wakes = body.get("wakes")
        if not ok or not isinstance(started, int | float) or not isinstance(wakes, list):
            return
        started_at = server_time(float(started), self._offsets[agent_id])
        await self._wakeups.on_sync(agent_id, started_at=started_at,
                                    sync_id=str(body.get("sync_id", ""))[:64],
                                    wakes=[str(w) for w in wakes], now=now)
