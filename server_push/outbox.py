"""Signed commands on their way to the broker, kept in the database until the
broker has taken them (PUBACK), so neither a server nor a broker restart loses
one. Expired commands are dropped unsent: the agent would refuse them anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.envelope import Command, sign_command
from epns.errors import BrokerUnavailable
from epns.logs import event
from epns.tokens import PrivateKey
from server_push.models import PendingCommand

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the outbox needs of the broker link."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1; BrokerUnavailable when not taken."""


class Outbox:
    """Persist, then publish; ``flush`` re-sends what is left after a reconnect."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], key: PrivateKey,
                 publisher: Publisher) -> None:
        self._sessions = sessions
        self._key = key
        self._publisher = publisher
        self._flush_lock = asyncio.Lock()

    def stage(self, session: AsyncSession, command: Command, topic: str) -> None:
        """Add ``command`` to the outbox inside the caller's transaction, so the
        command exists exactly when the request that made it does."""
        session.add(PendingCommand(id=command.id, topic=topic,
                                   payload=sign_command(command, self._key).decode(),
                                   created_at=command.issued_at,
                                   expires_at=command.expires_at))

    async def send(self, command_ids: list[str]) -> dict[str, float]:
        """Publish the staged commands; returns when each was taken. A command
        the broker does not take stays staged for ``flush``."""
        async with self._sessions() as session:
            rows = (await session.scalars(
                select(PendingCommand).where(PendingCommand.id.in_(command_ids)))).all()
        return await self._publish(rows)

    async def flush(self) -> dict[str, float]:
        """Re-send every staged command that has not expired; drop the others."""
        async with self._flush_lock:
            now = time.time()
            async with self._sessions() as session, session.begin():
                dropped = await session.execute(
                    delete(PendingCommand).where(PendingCommand.expires_at < now))
                rows = (await session.scalars(
                    select(PendingCommand).order_by(PendingCommand.created_at))).all()
            if dropped.rowcount:  # type: ignore[attr-defined]
                event(log, "commands_expired_unsent", logging.WARNING,
                      count=dropped.rowcount)  # type: ignore[attr-defined]
            taken = await self._publish(rows)
            if rows:
                event(log, "commands_flushed", sent=len(taken), held=len(rows) - len(taken))
            return taken

    async def _publish(self, rows: Sequence[PendingCommand]) -> dict[str, float]:
        taken: dict[str, float] = {}
        for row in rows:
            try:
                await self._publisher.publish(row.topic, row.payload.encode())
            except BrokerUnavailable as exc:
                event(log, "command_held", logging.WARNING, id=row.id, topic=row.topic,
                      reason=str(exc))
                break
            taken[row.id] = time.time()
        if taken:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    delete(PendingCommand).where(PendingCommand.id.in_(list(taken))))
        return taken
