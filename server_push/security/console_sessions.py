"""Console sessions held on the server.

A login makes a row in ``console_sessions`` and gives the browser one random
secret (the cookie); the row keeps only its SHA-256, so a leaked database
holds no working cookie. Every request looks the row up, so a session ends
for every replica at once when its row goes: at logout, when its user's
password changes, when an admin revokes it, or when it is idle for
``console.session_idle_timeout`` or older than ``console.session_max_age``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.errors import NotFound
from server_push.store.history import audit
from server_push.store.models import ConsoleSession

# last_seen is written at most this often per session (a tenth of the idle
# timeout when that is shorter): a page's API calls do not each cost a
# write, and the idle end comes early by at most this much.
TOUCH_EVERY = 30.0
MAX_USER_AGENT = 256
MAX_SOURCE = 64
# A console password a person chooses: long enough to resist guessing at the
# login throttle's pace.
MIN_PASSWORD = 12


@dataclass(frozen=True, slots=True)
class SessionView:
    """The live session behind a request's cookie."""

    id: str
    username: str
    csrf: str


def secret_hash(secret: str) -> str:
    """The stored form of a session's cookie secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


class SessionStore:
    """Start, find, list and end console sessions."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, idle: float,
                 lifetime: float) -> None:
        self._sessions = sessions
        self.idle = idle
        self.lifetime = lifetime

    async def start(self, username: str, *, source: str, user_agent: str,
                    now: float | None = None) -> tuple[str, SessionView]:
        """A new session for ``username``: (the cookie's secret, the session)."""
        now = time.time() if now is None else now
        secret = secrets.token_urlsafe(32)
        row = ConsoleSession(id=uuid.uuid4().hex, secret_hash=secret_hash(secret),
                             username=username, csrf=secrets.token_urlsafe(32),
                             created_at=now, last_seen=now, expires_at=now + self.lifetime,
                             source=source[:MAX_SOURCE], user_agent=user_agent[:MAX_USER_AGENT])
        async with self._sessions() as session, session.begin():
            # Ended sessions are deleted as they are met; this sweeps the
            # ones nobody came back with.
            await session.execute(delete(ConsoleSession).where(
                (ConsoleSession.expires_at <= now)
                | (ConsoleSession.last_seen <= now - self.idle)))
            session.add(row)
        return secret, SessionView(row.id, username, row.csrf)

    async def resolve(self, secret: str, now: float | None = None) -> SessionView | None:
        """The live session whose cookie secret is ``secret``, else None
        (an ended session's row is deleted on the way)."""
        now = time.time() if now is None else now
        async with self._sessions() as session, session.begin():
            row = await session.scalar(select(ConsoleSession).where(
                ConsoleSession.secret_hash == secret_hash(secret)))
            if row is None:
                return None
            if row.expires_at <= now or row.last_seen <= now - self.idle:
                await session.delete(row)
                return None
            if now - row.last_seen >= min(TOUCH_EVERY, self.idle / 10):
                row.last_seen = now
            return SessionView(row.id, row.username, row.csrf)

    async def alive(self, session_id: str, now: float | None = None) -> bool:
        """Whether the session still holds (for a request that outlives its
        start, the live stream)."""
        now = time.time() if now is None else now
        async with self._sessions() as session:
            row = await session.get(ConsoleSession, session_id)
        return row is not None and row.expires_at > now and row.last_seen > now - self.idle

    async def end(self, session_id: str) -> None:
        """End one session (logout); nothing when it has ended already."""
        async with self._sessions() as session, session.begin():
            await session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))

    async def end_for_user(self, username: str) -> int:
        """End every session of ``username`` (its password changed); how many."""
        async with self._sessions() as session, session.begin():
            return await end_user_sessions(session, username)

    async def revoke(self, session_id: str, actor: str) -> str:
        """An admin ends a session; the user it belonged to. NotFound when
        there is no such live session."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            row = await session.get(ConsoleSession, session_id)
            if row is None:
                raise NotFound(f"no console session {session_id!r} (ended already?)",
                               code="unknown_session")
            await session.delete(row)
            audit(session, at=now, actor=actor, action="session_revoke",
                  targets=[row.username], ref=session_id,
                  outcome=f"session of {row.username!r} from {row.source} ended")
        return row.username

    async def listed(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every live session, newest activity first, without secrets."""
        now = time.time() if now is None else now
        async with self._sessions() as session:
            rows = (await session.scalars(select(ConsoleSession).where(
                ConsoleSession.expires_at > now, ConsoleSession.last_seen > now - self.idle)
                .order_by(ConsoleSession.last_seen.desc(), ConsoleSession.id))).all()
        return [{"id": r.id, "username": r.username, "created_at": r.created_at,
                 "last_seen": r.last_seen, "source": r.source, "user_agent": r.user_agent,
                 "expires_at": min(r.expires_at, r.last_seen + self.idle)} for r in rows]


async def end_user_sessions(session: AsyncSession, username: str) -> int:
    """Delete every session of ``username`` inside the caller's transaction."""
    result = await session.execute(delete(ConsoleSession).where(
        ConsoleSession.username == username))
    return int(result.rowcount)  # type: ignore[attr-defined]
