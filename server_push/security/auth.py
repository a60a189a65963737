"""Who is calling: an integration (API bearer token), an admin (console
session), or an agent (client certificate or agent token, at the sync endpoints).

API tokens are random, shown once, and stored as SHA-256: a leaked database
does not leak working tokens. Console passwords are argon2 hashes.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import tokens
from epns.errors import Conflict, EPNSError, Forbidden, NotFound, Unauthorized
from epns.identity import Identity, Role, identity_from_certificate
from server_push.security.console_sessions import end_user_sessions
from server_push.security.revocations import RevocationStore
from server_push.store.history import audit
from server_push.store.models import Agent, ApiToken, User

API_TOKEN_PREFIX = "epns_"  # noqa: S105 - a prefix, not a secret
# An API token's life when given one: a minute (tests, trials) to ten years.
MIN_TOKEN_TTL = 60.0
MAX_TOKEN_TTL = 10 * 365 * 86400.0
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller of the API or the console."""

    kind: str  # "token" or "user"
    name: str

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.kind}:{self.name}"


def token_hash(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """An argon2 hash of ``password``."""
    return _hasher.hash(password)


def password_matches(stored: str, password: str) -> bool:
    """True when ``password`` matches the argon2 hash ``stored``."""
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class Credentials:
    """API tokens and console users in the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create_token(self, name: str, created_by: str, *,
                           expires_at: float | None = None) -> tuple[str, str]:
        """A new API token: returns (id, the token itself, shown only now).
        ``expires_at`` (UNIX seconds) ends its life; None: until revoked."""
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = uuid.uuid4().hex
        now = time.time()
        async with self._sessions() as session, session.begin():
            session.add(ApiToken(id=token_id, name=name[:128], token_hash=token_hash(token),
                                 created_at=now, created_by=created_by, expires_at=expires_at))
            audit(session, at=now, actor=created_by, action="token_create", targets=[],
                  ref=token_id, outcome=f"API token {name[:128]!r}" + (
                      f", expires {_utc(expires_at)}" if expires_at is not None else ""))
        return token_id, token

    async def revoke_token(self, token_id: str, actor: str) -> None:
        """Make an API token stop working; NotFound when there is no such
        token, Conflict when it is revoked already."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            row = await session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no API token {token_id!r}", code="unknown_token")
            if row.revoked_at is not None:
                raise Conflict(f"API token {token_id!r} ({row.name}) is revoked already",
                               code="token_revoked")
            row.revoked_at = now
            audit(session, at=now, actor=actor, action="token_revoke", targets=[],
                  ref=token_id, outcome=f"API token {row.name!r}")

    async def tokens(self) -> list[dict[str, Any]]:
        """Every API token, without the secret; ``state`` is active, expired
        or revoked."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(ApiToken).order_by(ApiToken.created_at))).all()
        now = time.time()
        return [{"id": r.id, "name": r.name, "created_at": r.created_at,
                 "created_by": r.created_by, "last_used": r.last_used,
                 "expires_at": r.expires_at, "revoked_at": r.revoked_at,
                 "revoked": r.revoked_at is not None, "state": _token_state(r, now)}
                for r in rows]

    async def check_token(self, token: str) -> Principal:
        """The integration behind a bearer token; Unauthorized when none."""
        async with self._sessions() as session, session.begin():
            row = await session.scalar(select(ApiToken).where(
                ApiToken.token_hash == token_hash(token)))
            now = time.time()
            if row is None or row.revoked_at is not None:
                raise Unauthorized("the API token is unknown or revoked: create one with "
                                   "'epns-server token create' or on the console",
                                   code="bad_token")
            if row.expires_at is not None and row.expires_at <= now:
                raise Unauthorized(f"the API token {row.name!r} expired at "
                                   f"{_utc(row.expires_at)}: create a new one with "
                                   "'epns-server token create' or on the console",
                                   code="token_expired")
            row.last_used = now
            return Principal("token", row.name)

    async def set_password(self, username: str, password: str) -> int:
        """Create the user, or change its password and end every console
        session it has (a copied cookie dies with the old password); returns
        how many sessions ended."""
        password_hash = hash_password(password)
        async with self._sessions() as session, session.begin():
            user = await session.get(User, username)
            if user is None:
                session.add(User(username=username, password_hash=password_hash,
                                 created_at=time.time()))
            else:
                user.password_hash = password_hash
            return await end_user_sessions(session, username)

    async def create_user(self, username: str, password: str) -> bool:
        """Create the user; False when it exists already (replicas starting
        together on one database race to make the first admin: one wins)."""
        try:
            async with self._sessions() as session, session.begin():
                session.add(User(username=username, password_hash=hash_password(password),
                                 created_at=time.time()))
        except IntegrityError:
            return False
        return True

    async def has_users(self) -> bool:
        """True once any console user exists."""
        async with self._sessions() as session:
            return await session.scalar(select(User.username).limit(1)) is not None

    async def check_password(self, username: str, password: str) -> Principal | None:
        """The user when the password matches, else None."""
        async with self._sessions() as session:
            user = await session.get(User, username)
        if user is None:
            # Spend the same time as a real check, so timing does not tell
            # which user names exist.
            password_matches(_DUMMY_HASH, password)
            return None
        return Principal("user", username) if password_matches(user.password_hash,
                                                                password) else None


_DUMMY_HASH = hash_password(secrets.token_hex(8))


def _token_state(row: ApiToken, now: float) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@dataclass(frozen=True, slots=True)
class AgentCaller:
    """An agent proven at a sync endpoint, and the identity it proved itself
    with: its certificate's serial or its token's id, and when that identity
    was issued and expires (UNIX seconds)."""

    agent_id: str
    method: str
    serial: str | None = None
    token_id: str | None = None
    issued_at: float | None = None
    expires_at: float | None = None


@functools.lru_cache(maxsize=4096)
def _certificate(pem: str) -> tuple[Identity, float, float]:
    """The identity in a client certificate TLS has verified, and its
    validity (not before, not after): a pure reading of the PEM, kept for
    the agent's next request (each sync is two, each parsed the
    certificate three times)."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    identity = identity_from_certificate(cert.public_bytes(Encoding.DER))
    return (identity, cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp())


class AgentAuthenticator:
    """Proves an agent at the sync endpoints, the same way the broker does:
    a fleet certificate (CN) or a token signed with the server's key, then the
    revocation list and the registry's own revoked flag."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 token_keys: Callable[[], Sequence[tokens.PublicKey]],
                 revocations: RevocationStore) -> None:
        self._sessions = sessions
        # Asked at each check: during a key rotation, two keys verify tokens.
        self._token_keys = token_keys
        self._revocations = revocations

    async def authenticate(self, cert_pem: str | None, bearer: str | None) -> AgentCaller:
        """The agent, or Unauthorized saying what to present."""
        serial = token_id = None
        try:
            if cert_pem is not None:
                identity, issued_at, expires_at = _certificate(cert_pem)
                if identity.role is not Role.AGENT:
                    raise Forbidden("only agents sync", code="not_an_agent")
                agent_id, method, serial = identity.name, "certificate", identity.serial
            elif bearer is not None:
                claims = tokens.verify_token(self._token_keys(), bearer, now=time.time())
                agent_id, method, token_id = claims.subject, "token", claims.token_id
                issued_at, expires_at = float(claims.issued_at), float(claims.expires_at)
            else:
                raise Unauthorized("present the agent's client certificate or its token "
                                   "(Authorization: Bearer)", code="no_agent_identity")
        except (EPNSError, ValueError) as exc:
            if isinstance(exc, Unauthorized | Forbidden):
                raise
            raise Unauthorized(f"agent identity refused: {exc}", code="bad_agent_identity") from exc
        revoked = self._revocations.current()
        reason = revoked.reason(agent_id, serial, token_id)
        if reason is None:
            # Two columns, not the whole row (its inventory): every sync
            # request comes through here.
            async with self._sessions() as session:
                row = (await session.execute(select(Agent.revoked_at, Agent.revoked_reason)
                                             .where(Agent.id == agent_id))).first()
            if row is not None and row.revoked_at is not None:
                reason = row.revoked_reason or "revoked"
        if reason is not None:
            raise Unauthorized(f"agent {agent_id!r} is revoked ({reason})", code="agent_revoked")
        return AgentCaller(agent_id, method, serial, token_id, issued_at, expires_at)
