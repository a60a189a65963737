"""Console users: made, listed, disabled, enabled and deleted by an admin, and
their passwords reset. Every change is audited; disabling or deleting a user,
or resetting its password, ends all its console sessions at once
(``console_sessions.py``), and disabling or deleting it revokes the API
tokens it made (``created_by`` is ``user:NAME``): a user who leaves keeps no
way in through a token. Enabling it again does not bring them back. The last
enabled admin cannot be disabled or
deleted: nobody could log in to undo it. Every user is an admin until roles
come; the ``role`` column is kept already.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.errors import BadRequest, Conflict, NotFound
from server_push.security.auth import hash_password
from server_push.security.console_sessions import MIN_PASSWORD, end_user_sessions
from server_push.store.history import audit
from server_push.store.models import ApiToken, User

ROLES = ("admin",)
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def generated_password() -> str:
    """A password for a new or reset user, shown once."""
    return secrets.token_urlsafe(12)


def check_username(name: str) -> str:
    """``name`` when it can be a user name, else BadRequest saying what can."""
    if not USERNAME.fullmatch(name):
        raise BadRequest(f"{name!r} is no user name: 1-64 letters, digits, '.', '_', '@', '-', "
                         "starting with a letter or digit", code="invalid_username")
    return name


def check_password_strength(password: str) -> str:
    """``password`` when long enough, else BadRequest."""
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"a password needs at least {MIN_PASSWORD} characters",
                         code="weak_password")
    return password


def _view(row: User) -> dict[str, Any]:
    return {"username": row.username, "role": row.role, "created_at": row.created_at,
            "created_by": row.created_by, "disabled": row.disabled_at is not None,
            "disabled_at": row.disabled_at}


async def _revoke_tokens(session: AsyncSession, username: str, now: float) -> int:
    """Revoke the live API tokens ``username`` made, in the caller's transaction."""
    result = await session.execute(update(ApiToken).where(
        ApiToken.created_by == f"user:{username}", ApiToken.revoked_at.is_(None))
        .values(revoked_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


class Users:
    """The ``users`` table, as an admin changes it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def listed(self) -> list[dict[str, Any]]:
        """Every user, by name, without the password hash."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(User).order_by(User.username))).all()
        return [_view(row) for row in rows]

    async def enabled(self, username: str) -> bool:
        """Whether ``username`` exists and may log in."""
        async with self._sessions() as session:
            row = await session.get(User, username)
        return row is not None and row.disabled_at is None

    async def add(self, username: str, password: str, actor: str,
                  role: str = "admin") -> dict[str, Any]:
        """A new enabled user; Conflict when the name is taken."""
        check_username(username)
        check_password_strength(password)
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r} (one of {', '.join(ROLES)})",
                             code="invalid_role")
        now = time.time()
        row = User(username=username, password_hash=hash_password(password), created_at=now,
                   role=role, created_by=actor[:128])
        try:
            async with self._sessions() as session, session.begin():
                session.add(row)
                await session.flush()
                audit(session, at=now, actor=actor, action="user_add", targets=[username],
                      outcome=f"user {username!r} ({role})")
        except IntegrityError as exc:
            raise Conflict(f"user {username!r} exists already", code="user_exists") from exc
        return _view(row)

    async def set_disabled(self, username: str, disabled: bool, actor: str) -> dict[str, Any]:
        """Disable (ending every session) or enable a user."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            row = await self._existing(session, username)
            if disabled and row.disabled_at is None:
                await self._keep_an_admin(session, row)
                row.disabled_at = now
                ended = await end_user_sessions(session, username)
                revoked = await _revoke_tokens(session, username, now)
                outcome = f"disabled, {ended} session(s) ended, {revoked} API token(s) revoked"
            elif not disabled and row.disabled_at is not None:
                row.disabled_at = None
                outcome = "enabled"
            else:
                return _view(row)
            audit(session, at=now, actor=actor,
                  action="user_disable" if disabled else "user_enable",
                  targets=[username], outcome=outcome)
            return _view(row)

    async def delete(self, username: str, actor: str) -> None:
        """Delete a user and end its sessions (its audit lines stay)."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            row = await self._existing(session, username)
            if row.disabled_at is None:
                await self._keep_an_admin(session, row)
            ended = await end_user_sessions(session, username)
            revoked = await _revoke_tokens(session, username, now)
            await session.delete(row)
            audit(session, at=now, actor=actor, action="user_delete", targets=[username],
                  outcome=f"deleted, {ended} session(s) ended, {revoked} API token(s) revoked")

    async def reset_password(self, username: str, actor: str,
                             password: str | None = None) -> tuple[str, int]:
        """Give a user a new password (generated when None) and end its
        sessions: (the password, how many sessions ended)."""
        value = check_password_strength(password) if password else generated_password()
        now = time.time()
        async with self._sessions() as session, session.begin():
            row = await self._existing(session, username)
            row.password_hash = hash_password(value)
            ended = await end_user_sessions(session, username)
            audit(session, at=now, actor=actor, action="user_password_reset",
                  targets=[username], outcome=f"password reset, {ended} session(s) ended")
        return value, ended

    @staticmethod
    async def _existing(session: AsyncSession, username: str) -> User:
        row = await session.get(User, username)
        if row is None:
            raise NotFound(f"no user {username!r}", code="unknown_user")
        return row

    @staticmethod
    async def _keep_an_admin(session: AsyncSession, row: User) -> None:
        if row.role != "admin":
            return
        others = await session.scalar(select(func.count()).select_from(User).where(
            User.role == "admin", User.disabled_at.is_(None), User.username != row.username))
        if not others:
            raise Conflict(f"{row.username!r} is the last enabled admin: add or enable "
                           "another admin first", code="last_admin")
