"""Several servers on one PostgreSQL: who leads, and what replicas tell each other.

Election: a replica leads while it holds a session-level advisory lock
(``pg_try_advisory_lock``) on a connection of its own. PostgreSQL drops the
lock with that session, so a killed or partitioned leader frees it without
any timeout of ours; the others try for it every ``cluster.elect_interval``.
The leader checks its connection as often and stops leading the moment it
fails, before it tries again, so two leaders overlap by at most one interval.

Notices: replicas LISTEN on one channel and NOTIFY it (through the ordinary
connection pool, so a notice leaves when its transaction commits). They carry
the console's change notices (every console stays live), the leader's broker
link state, and a follower's "outbox" nudge (it staged commands for the
leader to publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from epns.logs import event
from epns.server_config import ClusterSettings

log = logging.getLogger(__name__)

CHANNEL = "epns_cluster"
LOCK_KEY = 0x65706E73  # "epns"
QUEUE_LIMIT = 1024

Lead = Callable[[], Awaitable[None]]
OnNotice = Callable[[dict[str, Any]], None]


class Cluster:
    """This replica's place in the cluster; ``run`` until cancelled."""

    def __init__(self, engine: AsyncEngine, settings: ClusterSettings,
                 on_notice: OnNotice) -> None:
        self._engine = engine
        self._settings = settings
        self._on_notice = on_notice
        self._outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._overflowed = False
        self.replica = uuid.uuid4().hex[:12]
        self.leading = False

    def tell(self, notice: dict[str, Any]) -> None:
        """Send ``notice`` to the other replicas, without waiting. When the
        queue is full it is dropped, and the next batch tells the other
        replicas' consoles to reload (``resync``), as the bus does locally."""
        try:
            self._outgoing.put_nowait(notice)
        except asyncio.QueueFull:
            self._overflowed = True

    async def run(self, lead: Lead) -> None:
        """Listen, try for the lock, and run ``lead()`` while holding it."""
        sender = asyncio.create_task(self._send_loop(), name="cluster-notify")
        try:
            while True:
                try:
                    await self._membership(lead)
                except Exception as exc:  # asyncpg's own errors too: the election must go on
                    event(log, "cluster_link_down", logging.WARNING, error=repr(exc))
                await asyncio.sleep(self._settings.elect_interval)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _membership(self, lead: Lead) -> None:
        """One database session: listen, and lead while it holds the lock."""
        connection = await self._engine.connect()
        leader: asyncio.Task[None] | None = None
        try:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None  # an open connection has its asyncpg one
            await raw.add_listener(CHANNEL, self._heard)
            self.tell({"kind": "hello"})
            while True:
                if leader is None:
                    if await self._try_lock(connection):
                        leader = asyncio.create_task(self._lead(lead), name="cluster-leader")
                else:
                    await asyncio.wait_for(connection.scalar(text("SELECT 1")),
                                           self._settings.elect_interval)
                    if leader.done():
                        return  # the leader's work failed: give the lock up
                await asyncio.sleep(self._settings.elect_interval)
        finally:
            if leader is not None:
                leader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await leader
            # Closing the session (not returning it to the pool) frees the lock.
            with contextlib.suppress(SQLAlchemyError, OSError):
                await connection.invalidate()
                await connection.close()

    @staticmethod
    async def _try_lock(connection: AsyncConnection) -> bool:
        got = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                      {"key": LOCK_KEY})
        return bool(got)

    async def _lead(self, lead: Lead) -> None:
        self.leading = True
        event(log, "cluster_leading", replica=self.replica)
        try:
            await lead()
        except Exception as exc:
            event(log, "cluster_leader_failed", logging.ERROR, error=repr(exc))
            raise
        finally:
            self.leading = False
            event(log, "cluster_following", replica=self.replica)

    def _heard(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("from") == self.replica:
            return
        notice = message.get("notice")
        if isinstance(notice, dict):
            self._on_notice(notice)

    async def _send_loop(self) -> None:
        while True:
            notices = [await self._outgoing.get()]
            while not self._outgoing.empty():
                notices.append(self._outgoing.get_nowait())
            if self._overflowed:
                self._overflowed = False
                notices.append({"kind": "resync"})
            try:
                async with self._engine.begin() as connection:
                    for notice in notices:
                        await connection.execute(
                            text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": CHANNEL,
                             "payload": json.dumps({"from": self.replica, "notice": notice})})
            except (SQLAlchemyError, OSError) as exc:
                event(log, "cluster_notify_failed", logging.WARNING, error=str(exc),
                      dropped=len(notices))
