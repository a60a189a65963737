"""Each broker message is applied once, whichever replica receives it.

A message is claimed by inserting the digest of its topic and bytes; the
primary key lets one claim win, even when two replicas race (the second
insert waits for the first to commit, then fails). QoS 1 redelivers a message
with the same bytes, so a redelivery is caught the same way. Claims older than
``KEEP`` are pruned by the leader: by then a redelivery is not coming, and a
retained presence replayed later is harmless (the registry ignores a birth it
already holds).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.logs import event
from server_push.store.models import HandledEvent

log = logging.getLogger(__name__)

KEEP = 86400.0
PRUNE_EVERY = 3600.0


def message_key(topic: str, raw: bytes) -> str:
    """The claim key of one message: equal for a redelivery, distinct otherwise
    (every event and presence carries its own time)."""
    return hashlib.sha256(topic.encode() + b"\x00" + raw).hexdigest()


def replica_name() -> str:
    """This process, as the claims name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class HandledEvents:
    """Claims on broker messages, in the shared database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._me = replica_name()[:128]

    async def claim(self, topic: str, raw: bytes, now: float) -> bool:
        """True when this replica is the first to apply the message."""
        try:
            async with self._sessions() as session, session.begin():
                await self.claim_in(session, topic, raw, now)
        except IntegrityError:
            return False
        return True

    async def claim_in(self, session: AsyncSession, topic: str, raw: bytes, now: float) -> None:
        """Claim the message inside the caller's transaction, which then
        applies it: IntegrityError (the caller rolls back) when it is
        claimed already. A Core insert: every ack of a wake-all claims one."""
        await session.execute(insert(HandledEvent).values(
            key=message_key(topic, raw), topic=topic[:255], at=now, handled_by=self._me))

    async def prune(self, before: float) -> int:
        """Forget claims older than ``before``; returns how many."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(HandledEvent).where(HandledEvent.at < before))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def run_pruner(self) -> None:
        """Prune every ``PRUNE_EVERY`` seconds, until cancelled."""
        while True:
            try:
                pruned = await self.prune(time.time() - KEEP)
                if pruned:
                    event(log, "handled_events_pruned", count=pruned)
            except Exception as exc:  # the pruner must outlive a bad round
                event(log, "prune_failed", logging.ERROR, error=repr(exc))
            await asyncio.sleep(PRUNE_EVERY)
