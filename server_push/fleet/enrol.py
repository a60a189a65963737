"""One-time enrolment tokens: an installer trades one, with a CSR, for an
agent identity and its config bundle.

An admin creates a token (groups, lifetime, optionally the one agent id it may
enrol); it is shown once and stored as SHA-256. The installer makes its key
locally and sends ``{"token", "agent_id", "csr"}``; the server issues the
certificate (CN = the agent id, whatever the CSR's subject says) and answers
the bundle without a key. A token enrols exactly one agent: the claim is a
conditional UPDATE in the same transaction as the new agent's row, so two
installers racing with one token get one identity and one 401, and a refused
enrolment (bad CSR, id taken) leaves the token usable.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import pki, topics
from epns.errors import BadRequest, Conflict, Forbidden, NotFound, PKIError, Unauthorized
from epns.logs import event
from server_push.fleet.agents import AgentAdmin, Bundle, check_groups
from server_push.security.auth import token_hash
from server_push.store.history import audit, remember
from server_push.store.models import EnrolToken

ENROL_TOKEN_PREFIX = "epnsenrol_"  # noqa: S105 - a prefix, not a secret
MIN_TTL = 60.0
MAX_TTL = 30 * 86400.0
DEFAULT_TTL = 86400.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token as created: ``token`` is the secret, shown only now."""

    id: str
    token: str
    groups: list[str]
    agent_id: str | None
    expires_at: float


def _describe(row: EnrolToken, now: float) -> dict[str, Any]:
    state = "used" if row.used_at is not None else "expired" if row.expires_at <= now else "unused"
    return {"id": row.id, "groups": list(row.groups or []), "agent_id": row.agent_id,
            "created_at": row.created_at, "created_by": row.created_by,
            "expires_at": row.expires_at, "used_at": row.used_at, "state": state}


class Enrolment:
    """Enrolment tokens and the enrolment they authorize."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], agents: AgentAdmin) -> None:
        self._sessions = sessions
        self._agents = agents

    async def create_token(self, groups: Sequence[str], ttl: float, agent_id: str | None,
                           actor: str) -> NewToken:
        """A new token for ``ttl`` seconds; BadRequest for a ttl out of range."""
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise BadRequest(f"ttl must be {MIN_TTL:.0f} s - {MAX_TTL / 86400:.0f} days",
                             code="bad_ttl")
        names = check_groups(groups)
        if agent_id is not None:
            topics.check_agent_id(agent_id)
        token = ENROL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        row = EnrolToken(id=uuid.uuid4().hex, token_hash=token_hash(token), groups=names,
                         created_at=now, created_by=actor, expires_at=now + ttl,
                         agent_id=agent_id)
        async with self._sessions() as session, session.begin():
            session.add(row)
            audit(session, at=now, actor=actor, action="enrol_token_create",
                  targets=[agent_id] if agent_id else [], ref=row.id,
                  outcome=f"valid {ttl:.0f} s, groups: {', '.join(names) or 'none'}")
        return NewToken(row.id, token, names, agent_id, row.expires_at)

    async def tokens(self) -> list[dict[str, Any]]:
        """Every token, newest first, without secrets."""
        async with self._sessions() as session:
            rows = (await session.scalars(
                select(EnrolToken).order_by(EnrolToken.created_at.desc()))).all()
        now = time.time()
        return [_describe(row, now) for row in rows]

    async def cancel(self, token_id: str, actor: str) -> None:
        """Delete an unused token; NotFound, or Conflict once it was used."""
        async with self._sessions() as session, session.begin():
            row = await session.get(EnrolToken, token_id)
            if row is None:
                raise NotFound(f"no enrolment token {token_id!r}", code="unknown_enrol_token")
            if row.used_at is not None:
                raise Conflict(f"enrolment token {token_id!r} was used already (agent "
                               f"{row.agent_id!r}); revoke the agent instead",
                               code="enrol_token_used")
            await session.delete(row)
            audit(session, at=time.time(), actor=actor, action="enrol_token_cancel",
                  targets=[row.agent_id] if row.agent_id else [], ref=token_id,
                  outcome="cancelled")

    async def enrol(self, token: str, agent_id: str, csr_pem: str) -> Bundle:
        """Trade ``token`` and a CSR for agent ``agent_id``'s certificate and
        bundle: Unauthorized for a token that cannot be used, Forbidden for an
        id the token is not for, BadRequest for a bad CSR, Conflict for an id
        that is taken."""
        topics.check_agent_id(agent_id)
        now = time.time()
        row = await self._usable(token, agent_id, now)
        try:
            pki.csr_public_key(csr_pem.encode())
        except PKIError as exc:
            raise BadRequest(f"the CSR cannot be used: {exc}", code="bad_csr") from exc
        # Checked above: a PKIError from here on is the server's own (its CA).
        cert_pem, serial = self._agents.certificate_for(agent_id, csr_pem.encode())
        groups = list(row.groups or [])
        actor = f"enrol-token:{row.id}"
        try:
            async with self._sessions() as session, session.begin():
                await self._claim(session, row.id, agent_id, now)
                await self._agents.add(session, agent_id, groups, "certificate",
                                       serial=serial, token_id=None, now=now)
                remember(session, agent_id, now, "created",
                         f"enrolled with token {row.id} (made by {row.created_by})")
                audit(session, at=now, actor=actor, action="agent_enrol", targets=[agent_id],
                      ref=row.id, outcome=f"enrolled with a certificate, serial {serial}")
        except IntegrityError as exc:
            # Another installer created the same id between our check and commit.
            raise Conflict(f"agent {agent_id!r} exists already",
                           code="agent_exists") from exc
        self._agents.announce(agent_id, "certificate", actor)
        event(log, "agent_enrolled", agent=agent_id, token=row.id)
        return self._agents.bundle(agent_id, groups, "certificate", {"agent.crt": cert_pem})

    async def _usable(self, token: str, agent_id: str, now: float) -> EnrolToken:
        async with self._sessions() as session:
            row = await session.scalar(select(EnrolToken).where(
                EnrolToken.token_hash == token_hash(token)))
        if row is None:
            raise Unauthorized("unknown enrolment token: mistyped, cancelled, or from another "
                               "server", code="bad_enrol_token")
        if row.used_at is not None:
            raise Unauthorized("this enrolment token was used already; ask for a new one",
                               code="enrol_token_used")
        if row.expires_at <= now:
            raise Unauthorized("this enrolment token has expired; ask for a new one",
                               code="enrol_token_expired")
        if row.agent_id is not None and row.agent_id != agent_id:
            raise Forbidden(f"this enrolment token is for agent {row.agent_id!r}, "
                            f"not {agent_id!r}", code="enrol_token_other_agent")
        return row

    @staticmethod
    async def _claim(session: AsyncSession, token_id: str, agent_id: str, now: float) -> None:
        # The first statement of the transaction, and a conditional one: of two
        # installers racing with one token, the second finds it used.
        result = await session.execute(update(EnrolToken).where(
            EnrolToken.id == token_id, EnrolToken.used_at.is_(None),
            EnrolToken.expires_at > now).values(used_at=now, agent_id=agent_id))
        if not result.rowcount:  # type: ignore[attr-defined]
            raise Unauthorized("this enrolment token was used already; ask for a new one",
                               code="enrol_token_used")
