"""Signed commands on their way to the broker, kept in the database until the
broker has taken them (PUBACK), so neither a server nor a broker restart loses
one. Expired commands are dropped unsent: the agent would refuse them anyway.

Rows being published stay locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)
until they are deleted, so two replicas flushing at once never send one
command twice. In ``leader`` mode a follower has no broker session: its
``hand_off`` asks the leader to flush instead (``cluster.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.envelope import Command, sign_command
from epns.errors import BrokerUnavailable
from epns.logs import event
from epns.tokens import PrivateKey
from server_push.store.models import PendingCommand

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the outbox needs of the broker link."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1; BrokerUnavailable when not taken."""


@dataclass
class OutboxCounts:
    """What this replica's outbox did, for the metrics."""

    published: int = 0
    publish_failures: int = 0
    expired_unsent: int = 0


class Outbox:
    """Persist, then publish; ``flush`` re-sends what is left after a reconnect."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 key: Callable[[], PrivateKey], publisher: Publisher) -> None:
        self._sessions = sessions
        # Asked at each command: a key rotation changes it under a running server.
        self._key = key
        self._publisher = publisher
        self._flush_lock = asyncio.Lock()
        # Set while this replica is a follower in leader mode.
        self.hand_off: Callable[[], None] | None = None
        self.counts = OutboxCounts()

    def stage(self, session: AsyncSession, command: Command, topic: str) -> None:
        """Add ``command`` to the outbox inside the caller's transaction, so the
        command exists exactly when the request that made it does."""
        session.add(PendingCommand(id=command.id, topic=topic,
                                   payload=sign_command(command, self._key()).decode(),
                                   created_at=command.issued_at,
                                   expires_at=command.expires_at))

    async def send(self, command_ids: list[str]) -> dict[str, float]:
        """Publish the staged commands; returns when each was taken. A command
        the broker does not take stays staged for ``flush``."""
        if self.hand_off is not None:
            self.hand_off()
            return {}
        taken, _ = await self._publish(command_ids)
        return taken

    async def flush(self) -> dict[str, float]:
        """Re-send every staged command that has not expired; drop the others."""
        async with self._flush_lock:
            now = time.time()
            async with self._sessions() as session, session.begin():
                dropped = await session.execute(
                    delete(PendingCommand).where(PendingCommand.expires_at < now))
            if dropped.rowcount:  # type: ignore[attr-defined]
                self.counts.expired_unsent += dropped.rowcount  # type: ignore[attr-defined]
                event(log, "commands_expired_unsent", logging.WARNING,
                      count=dropped.rowcount)  # type: ignore[attr-defined]
            taken, found = await self._publish(None)
            if found:
                event(log, "commands_flushed", sent=len(taken), held=found - len(taken))
            return taken

    async def _publish(self, command_ids: list[str] | None) -> tuple[dict[str, float], int]:
        """Publish the commands named (all when None, oldest first) that no one
        else holds; delete what the broker took. Returns when each was taken,
        and how many were found."""
        query = select(PendingCommand).order_by(PendingCommand.created_at)
        if command_ids is not None:
            query = query.where(PendingCommand.id.in_(command_ids))
        taken: dict[str, float] = {}
        async with self._sessions() as session, session.begin():
            rows = (await session.scalars(query.with_for_update(skip_locked=True))).all()
            for row in rows:
                try:
                    await self._publisher.publish(row.topic, row.payload.encode())
                except BrokerUnavailable as exc:
                    self.counts.publish_failures += 1
                    event(log, "command_held", logging.WARNING, id=row.id, topic=row.topic,
                          reason=str(exc))
                    break
                taken[row.id] = time.time()
            if taken:
                self.counts.published += len(taken)
                await session.execute(
                    delete(PendingCommand).where(PendingCommand.id.in_(list(taken))))
        return taken, len(rows)
