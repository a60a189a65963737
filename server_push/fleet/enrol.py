"""Enrolment tokens: installers trade one, with a CSR, for agent identities.

An admin creates a token (groups, lifetime, how many uses or unlimited,
whether each enrolment waits for approval, optionally the one agent id it may
enrol); it is shown once and stored as SHA-256. The installer makes its key
locally and sends ``{"token", "csr"}`` with either the agent id it wants or
its machine (host name and fingerprint, ``epns.machine``), so one command
works on every machine of a fleet. The server issues the certificate (CN =
the id it chose, whatever the CSR's subject says) and answers the bundle
without a key; with approval, it answers a pending enrolment the installer
polls until an admin accepts or rejects it.

Every use is an ``Enrolment`` row. The claim is a conditional UPDATE
(``uses < max_uses``) in the same transaction as the row and, without
approval, the new agent's row: of N installers racing with a token of k uses,
exactly k get an identity, and an enrolment refused after the token check
(bad CSR, id taken) leaves the use unspent. A rejected or expired pending
enrolment gives its use back.

An id made of a host name that another machine holds becomes unique with the
first six hex digits of this machine's fingerprint (``pc-7-3fa4c1``): the
same on every re-install of the machine, and no count to race on. A machine
whose agent is enrolled and not revoked is refused (409 ``machine_enrolled``,
naming the agent and the revoke command); once revoked, it enrols again under
a new id, since a revocation holds for the id (``agent:ID``) for good.
"""

from __future__ import annotations

import hmac
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

from epns import machine, pki, topics
from epns.errors import BadRequest, Conflict, Forbidden, NotFound, PKIError, Unauthorized
from epns.logs import event
from server_push.fleet.agents import AgentAdmin, Bundle, check_groups
from server_push.fleet.bus import Bus
from server_push.security.auth import token_hash
from server_push.store.history import audit, remember
from server_push.store.models import Agent, EnrolToken
from server_push.store.models import Enrolment as EnrolmentRow

ENROL_TOKEN_PREFIX = "epnsenrol_"  # noqa: S105 - a prefix, not a secret
MIN_TTL = 60.0
MAX_TTL = 30 * 86400.0
DEFAULT_TTL = 86400.0
MAX_USES = 1_000_000
# How long an installer waits between two polls of a pending enrolment.
POLL_AFTER = 10.0
# A token's enrolments listed with it, newest first.
LISTED_USES = 1000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token as created: ``token`` is the secret, shown only now."""

    id: str
    token: str
    groups: list[str]
    agent_id: str | None
    expires_at: float
    max_uses: int | None
    approval: bool


@dataclass(frozen=True, slots=True)
class Machine:
    """What an installer says about its machine: the host name it sent, the
    fingerprint of its machine id, the address it came from."""

    hostname: str | None = None
    fingerprint: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """An enrolment waiting for an admin: poll it with ``secret`` (shown only
    in the first answer)."""

    id: str
    secret: str | None
    expires_at: float
    poll_after: float = POLL_AFTER


@dataclass(frozen=True, slots=True)
class _Request:
    token_id: str
    groups: list[str]
    requested_id: str
    explicit: bool
    machine: Machine


def _token_state(row: EnrolToken, now: float) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.max_uses is not None and row.uses >= row.max_uses:
        return "used"
    return "expired" if row.expires_at <= now else "active"


def _describe_token(row: EnrolToken, now: float) -> dict[str, Any]:
    return {"id": row.id, "groups": list(row.groups or []), "agent_id": row.agent_id,
            "max_uses": row.max_uses, "uses": row.uses, "approval": row.approval,
            "created_at": row.created_at, "created_by": row.created_by,
            "expires_at": row.expires_at, "used_at": row.used_at,
            "revoked_at": row.revoked_at, "revoked_by": row.revoked_by,
            "state": _token_state(row, now)}


def _describe_enrolment(row: EnrolmentRow) -> dict[str, Any]:
    """An enrolment as the API lists it (no CSR, certificate or secret)."""
    return {"id": row.id, "token_id": row.token_id, "state": row.state,
            "created_at": row.created_at, "expires_at": row.expires_at,
            "requested_id": row.requested_id, "hostname": row.hostname,
            "machine": row.machine, "address": row.address, "agent_id": row.agent_id,
            "decided_at": row.decided_at, "decided_by": row.decided_by, "detail": row.detail}


class Enrolment:
    """Enrolment tokens, the enrolments they authorize, and their approval."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], agents: AgentAdmin,
                 pending_ttl: float, bus: Bus) -> None:
        self._sessions = sessions
        self._agents = agents
        self._pending_ttl = pending_ttl
        self._bus = bus

    # --- tokens ------------------------------------------------------------

    async def create_token(self, groups: Sequence[str], ttl: float, agent_id: str | None,
                           actor: str, *, max_uses: int | None = 1,
                           approval: bool = False) -> NewToken:
        """A new token for ``ttl`` seconds and ``max_uses`` enrolments (None:
        unlimited); BadRequest for a ttl or a count out of range."""
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise BadRequest(f"ttl must be {MIN_TTL:.0f} s - {MAX_TTL / 86400:.0f} days",
                             code="bad_ttl")
        if max_uses is not None and not 1 <= max_uses <= MAX_USES:
            raise BadRequest(f"max_uses must be 1 - {MAX_USES}, or null for unlimited",
                             code="bad_max_uses")
        names = check_groups(groups)
        if agent_id is not None:
            topics.check_agent_id(agent_id)
            if max_uses != 1:
                raise BadRequest("a token for one agent id enrols it once: max_uses must be 1",
                                 code="bad_max_uses")
        token = ENROL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        row = EnrolToken(id=uuid.uuid4().hex, token_hash=token_hash(token), groups=names,
                         created_at=now, created_by=actor, expires_at=now + ttl,
                         agent_id=agent_id, max_uses=max_uses, uses=0, approval=approval)
        uses = "unlimited uses" if max_uses is None else f"{max_uses} use(s)"
        async with self._sessions() as session, session.begin():
            session.add(row)
            audit(session, at=now, actor=actor, action="enrol_token_create",
                  targets=[agent_id] if agent_id else [], ref=row.id,
                  outcome=f"valid {ttl:.0f} s, {uses}{', with approval' if approval else ''}, "
                          f"groups: {', '.join(names) or 'none'}")
        return NewToken(row.id, token, names, agent_id, row.expires_at, max_uses, approval)

    async def tokens(self) -> list[dict[str, Any]]:
        """Every token, newest first, without secrets."""
        async with self._sessions() as session:
            rows = (await session.scalars(
                select(EnrolToken).order_by(EnrolToken.created_at.desc()))).all()
        now = time.time()
        return [_describe_token(row, now) for row in rows]

    async def token(self, token_id: str) -> dict[str, Any]:
        """One token with its enrolments (newest first, at most 1,000)."""
        await self._expire_due()
        async with self._sessions() as session:
            row = await session.get(EnrolToken, token_id)
            if row is None:
                raise NotFound(f"no enrolment token {token_id!r}", code="unknown_enrol_token")
            uses = (await session.scalars(
                select(EnrolmentRow).where(EnrolmentRow.token_id == token_id)
                .order_by(EnrolmentRow.created_at.desc()).limit(LISTED_USES))).all()
        return {**_describe_token(row, time.time()),
                "enrolments": [_describe_enrolment(use) for use in uses]}

    async def revoke(self, token_id: str, actor: str) -> None:
        """Revoke a token: it enrols no one any more; its row and its
        enrolments stay listed. NotFound, or Conflict when revoked already."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            row = await session.get(EnrolToken, token_id)
            if row is None:
                raise NotFound(f"no enrolment token {token_id!r}", code="unknown_enrol_token")
            if row.revoked_at is not None:
                raise Conflict(f"enrolment token {token_id!r} is revoked already",
                               code="enrol_token_revoked")
            row.revoked_at, row.revoked_by = now, actor
            audit(session, at=now, actor=actor, action="enrol_token_revoke",
                  targets=[row.agent_id] if row.agent_id else [], ref=token_id,
                  outcome=f"revoked after {row.uses} use(s)")

    # --- the installer's side ---------------------------------------------

    async def enrol(self, token: str, agent_id: str | None, csr_pem: str,
                    found: Machine) -> Bundle | Pending:
        """Trade ``token`` and a CSR for an identity: the bundle, or a pending
        enrolment when the token needs approval.
        ``agent_id`` None: an id made of ``found.hostname``. Unauthorized
        for a token that cannot be used, Forbidden for an id the token is not
        for, BadRequest for a bad CSR or no id at all, Conflict for an id that
        is taken or a machine that is enrolled already."""
        now = time.time()
        row = await self._usable(token, now)
        request = self._request(row, agent_id, found)
        try:
            pki.csr_public_key(csr_pem.encode())
        except PKIError as exc:
            raise BadRequest(f"the CSR cannot be used: {exc}", code="bad_csr") from exc
        if row.approval:
            # Refused now rather than after an admin's accept.
            await self._choose_id(request)
            return await self._request_approval(request, csr_pem, now)
        return await self._issue(request, csr_pem, f"enrol-token:{row.id}", uuid.uuid4().hex,
                                 claim=True)

    async def poll(self, enrolment_id: str, secret: str) -> Bundle | Pending:
        """A pending enrolment as it stands: still Pending, or the bundle once
        accepted; Forbidden once rejected; Unauthorized when unknown, the
        secret wrong, or expired."""
        await self._expire_due()
        async with self._sessions() as session:
            row = await session.get(EnrolmentRow, enrolment_id)
            agent = None if row is None or row.agent_id is None else await session.get(
                Agent, row.agent_id)
        if row is None or row.secret_hash is None or not hmac.compare_digest(
                row.secret_hash, token_hash(secret)):
            raise Unauthorized("unknown enrolment, or not its secret", code="unknown_enrolment")
        if row.state == "pending":
            return Pending(row.id, None, row.expires_at)
        if row.state == "rejected":
            raise Forbidden(f"an admin rejected this enrolment ({row.decided_by}): "
                            f"{row.detail or 'no reason given'}", code="enrolment_rejected")
        if row.state == "expired" or agent is None or row.cert is None:
            raise Unauthorized("this enrolment waited for approval past its time and expired; "
                               "run the installer again", code="enrolment_expired")
        return self._agents.bundle(agent.id, list(agent.groups or []), "certificate",
                                   {"agent.crt": row.cert})

    # --- the admin's side ----------------------------------------------------

    async def enrolments(self, states: Sequence[str] = (), token_ids: Sequence[str] = (),
                         limit: int = LISTED_USES) -> list[dict[str, Any]]:
        """Enrolments, newest first: all, or those in one of ``states`` / of
        one of ``token_ids``."""
        await self._expire_due()
        query = select(EnrolmentRow).order_by(EnrolmentRow.created_at.desc()).limit(limit)
        if states:
            query = query.where(EnrolmentRow.state.in_(states))
        if token_ids:
            query = query.where(EnrolmentRow.token_id.in_(token_ids))
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [_describe_enrolment(row) for row in rows]

    async def accept(self, enrolment_id: str, actor: str) -> dict[str, Any]:
        """Accept a pending enrolment: the agent is created and its certificate
        issued; the installer fetches the bundle at its next poll."""
        await self._expire_due()
        row = await self._pending(enrolment_id)
        async with self._sessions() as session:
            token = await session.get(EnrolToken, row.token_id)
        request = _Request(row.token_id, list(token.groups or []) if token else [],
                           row.requested_id, row.explicit_id,
                           Machine(row.hostname, row.machine, row.address))
        assert row.csr is not None  # a pending row always keeps its CSR
        await self._issue(request, row.csr, actor, enrolment_id, claim=False)
        async with self._sessions() as session:
            done = await session.get(EnrolmentRow, enrolment_id)
        assert done is not None
        return _describe_enrolment(done)

    async def reject(self, enrolment_id: str, actor: str, reason: str) -> dict[str, Any]:
        """Reject a pending enrolment; its use of the token is given back."""
        now = time.time()
        await self._expire_due()
        async with self._sessions() as session, session.begin():
            if not await self._decide(session, enrolment_id, "rejected", now=now, actor=actor,
                                      detail=reason[:500]):
                await self._undecidable(enrolment_id)
            row = await session.get(EnrolmentRow, enrolment_id)
            assert row is not None
            await self._give_back(session, row.token_id)
            audit(session, at=now, actor=actor, action="enrolment_reject",
                  targets=[row.requested_id], ref=enrolment_id, outcome=reason[:500])
        event(log, "enrolment_rejected", enrolment=enrolment_id, by=actor)
        self._bus.publish({"kind": "enrolment", "id": enrolment_id})
        return _describe_enrolment(row)

    # --- inside ----------------------------------------------------------------

    async def _usable(self, token: str, now: float) -> EnrolToken:
        async with self._sessions() as session:
            row = await session.scalar(select(EnrolToken).where(
                EnrolToken.token_hash == token_hash(token)))
        if row is None:
            raise Unauthorized("unknown enrolment token: mistyped, or from another server",
                               code="bad_enrol_token")
        if row.revoked_at is not None:
            raise Unauthorized("this enrolment token was revoked; ask for a new one",
                               code="enrol_token_revoked")
        if row.max_uses is not None and row.uses >= row.max_uses:
            raise Unauthorized(_used_up(row.max_uses), code="enrol_token_used")
        if row.expires_at <= now:
            raise Unauthorized("this enrolment token has expired; ask for a new one",
                               code="enrol_token_expired")
        return row

    @staticmethod
    def _request(row: EnrolToken, agent_id: str | None, found: Machine) -> _Request:
        groups = list(row.groups or [])
        if row.agent_id is not None:
            if agent_id is not None and agent_id != row.agent_id:
                raise Forbidden(f"this enrolment token is for agent {row.agent_id!r}, "
                                f"not {agent_id!r}", code="enrol_token_other_agent")
            return _Request(row.id, groups, row.agent_id, True, _bounded(found))
        if agent_id is not None:
            return _Request(row.id, groups, topics.check_agent_id(agent_id), True,
                            _bounded(found))
        if not found.hostname:
            raise BadRequest("send agent_id, or hostname for an id made of it",
                             code="no_agent_id")
        return _Request(row.id, groups, machine.agent_id_from_hostname(found.hostname), False,
                        _bounded(found))

    async def _choose_id(self, request: _Request, tried: frozenset[str] = frozenset()) -> str:
        """The id this request gets now, other than those ``tried`` (lost to
        a racing installer): Conflict when the machine is enrolled already, or
        the id asked for explicitly is taken, or every candidate is."""
        async with self._sessions() as session:
            fingerprint = request.machine.fingerprint
            if fingerprint is not None:
                enrolled = await session.scalar(select(Agent.id).where(
                    Agent.machine == fingerprint, Agent.revoked_at.is_(None)).limit(1))
                if enrolled is not None:
                    raise Conflict(
                        f"this machine is enrolled already, as agent {enrolled!r}. To enrol "
                        f"it again (a re-install that lost its identity), revoke that one "
                        f"first: epns-server agent revoke {enrolled}, or revoke it in the "
                        "console", code="machine_enrolled")
            if request.explicit:
                return request.requested_id
            for candidate in machine.candidates(request.requested_id, fingerprint):
                if candidate in tried:
                    continue
                existing = await session.get(Agent, candidate)
                if existing is None or existing.auth == "discovered":
                    return candidate
        raise Conflict(f"every id made of {request.requested_id!r} is taken; enrol with --id",
                       code="agent_exists")

    async def _request_approval(self, request: _Request, csr_pem: str, now: float) -> Pending:
        secret = secrets.token_urlsafe(32)
        row = EnrolmentRow(
            id=uuid.uuid4().hex, token_id=request.token_id, state="pending", created_at=now,
            expires_at=now + self._pending_ttl, requested_id=request.requested_id,
            explicit_id=request.explicit, hostname=request.machine.hostname,
            machine=request.machine.fingerprint, address=request.machine.address,
            csr=csr_pem, secret_hash=token_hash(secret), detail="")
        async with self._sessions() as session, session.begin():
            await self._claim(session, request.token_id, now)
            session.add(row)
            audit(session, at=now, actor=f"enrol-token:{request.token_id}",
                  action="enrolment_request", targets=[request.requested_id], ref=row.id,
                  outcome=f"pending approval; host {request.machine.hostname or '?'}, "
                          f"address {request.machine.address or '?'}")
        event(log, "enrolment_pending", enrolment=row.id, requested=request.requested_id,
              token=request.token_id)
        self._bus.publish({"kind": "enrolment", "id": row.id})
        return Pending(row.id, secret, row.expires_at)

    async def _issue(self, request: _Request, csr_pem: str, actor: str, enrolment_id: str, *,
                     claim: bool) -> Bundle:
        """Choose the id, issue the certificate and create the agent, in one
        transaction with the token's claim (``claim``) or the pending row's
        acceptance. A derived id that a racing installer took meanwhile is
        not tried again: each attempt moves down the candidates, so N
        installers of one name need at most N attempts."""
        tried: set[str] = set()
        while True:
            agent_id = await self._choose_id(request, frozenset(tried))
            # Checked before: a PKIError from here on is the server's own (its CA).
            issued = self._agents.issue_for_csr(agent_id, csr_pem.encode())
            cert_pem, serial = issued.files["agent.crt"], issued.serial
            now = time.time()
            try:
                async with self._sessions() as session, session.begin():
                    if claim:
                        await self._claim(session, request.token_id, now)
                    elif not await self._decide(session, enrolment_id, "enrolled", now=now,
                                                actor=actor, detail=f"enrolled as {agent_id}"):
                        await self._undecidable(enrolment_id)
                    await self._agents.add(session, agent_id, request.groups, "certificate",
                                           serial=serial, token_id=None, now=now,
                                           validity=(issued.issued_at, issued.expires_at))
                    agent = await session.get(Agent, agent_id)
                    assert agent is not None
                    agent.machine = request.machine.fingerprint
                    await self._record(session, request, enrolment_id, agent_id, cert_pem,
                                       claim=claim, now=now)
                    remember(session, agent_id, now, "created",
                             f"enrolled with token {request.token_id}"
                             + ("" if claim else f", accepted by {actor}"))
                    audit(session, at=now, actor=actor,
                          action="agent_enrol" if claim else "enrolment_accept",
                          targets=[agent_id], ref=enrolment_id,
                          outcome=f"enrolled with a certificate, serial {serial}")
            except (IntegrityError, Conflict) as exc:
                taken = isinstance(exc, IntegrityError) or exc.code == "agent_exists"
                if taken and not request.explicit:
                    tried.add(agent_id)
                    continue
                if isinstance(exc, IntegrityError):
                    raise Conflict(f"agent {agent_id!r} exists already",
                                   code="agent_exists") from exc
                raise
            self._agents.announce(agent_id, "certificate", actor)
            event(log, "agent_enrolled", agent=agent_id, token=request.token_id,
                  enrolment=enrolment_id)
            self._bus.publish({"kind": "enrolment", "id": enrolment_id})
            return self._agents.bundle(agent_id, request.groups, "certificate",
                                       {"agent.crt": cert_pem})

    @staticmethod
    async def _record(session: AsyncSession, request: _Request, enrolment_id: str, agent_id: str,
                cert_pem: str, *, claim: bool, now: float) -> None:
        if claim:
            session.add(EnrolmentRow(
                id=enrolment_id, token_id=request.token_id, state="enrolled", created_at=now,
                expires_at=now, requested_id=request.requested_id,
                explicit_id=request.explicit, hostname=request.machine.hostname,
                machine=request.machine.fingerprint, address=request.machine.address,
                agent_id=agent_id, decided_at=now, detail=""))
            return
        # The accepted row: its agent and certificate, for the installer's next poll.
        await session.execute(update(EnrolmentRow).where(
            EnrolmentRow.id == enrolment_id).values(agent_id=agent_id, cert=cert_pem, csr=None))

    @staticmethod
    async def _claim(session: AsyncSession, token_id: str, now: float) -> None:
        # The first statement of the transaction, and a conditional one: of N
        # installers racing with a token of k uses, exactly k pass.
        result = await session.execute(update(EnrolToken).where(
            EnrolToken.id == token_id, EnrolToken.revoked_at.is_(None),
            EnrolToken.expires_at > now,
            (EnrolToken.max_uses.is_(None)) | (EnrolToken.uses < EnrolToken.max_uses),
        ).values(uses=EnrolToken.uses + 1, used_at=now))
        if not result.rowcount:  # type: ignore[attr-defined]
            row = await session.get(EnrolToken, token_id)
            raise Unauthorized(_used_up(row.max_uses if row else 1), code="enrol_token_used")

    @staticmethod
    async def _decide(session: AsyncSession, enrolment_id: str, state: str, *, now: float,
                      actor: str, detail: str) -> bool:
        # Conditional: of two admins deciding at once, one decides.
        result = await session.execute(update(EnrolmentRow).where(
            EnrolmentRow.id == enrolment_id, EnrolmentRow.state == "pending",
            EnrolmentRow.expires_at > now,
        ).values(state=state, decided_at=now, decided_by=actor, detail=detail))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    async def _give_back(session: AsyncSession, token_id: str) -> None:
        await session.execute(update(EnrolToken).where(
            EnrolToken.id == token_id, EnrolToken.uses > 0).values(uses=EnrolToken.uses - 1))

    async def _pending(self, enrolment_id: str) -> EnrolmentRow:
        """The pending enrolment; NotFound, or Conflict saying what it is now."""
        async with self._sessions() as session:
            row = await session.get(EnrolmentRow, enrolment_id)
        if row is None:
            raise NotFound(f"no enrolment {enrolment_id!r}", code="unknown_enrolment")
        if row.state != "pending":
            raise Conflict(f"enrolment {enrolment_id!r} is {row.state} already"
                           + (f" (agent {row.agent_id})" if row.agent_id else ""),
                           code=f"enrolment_{row.state}")
        return row

    async def _undecidable(self, enrolment_id: str) -> None:
        """Raise why a decision on the enrolment did not take: gone, decided
        by someone else meanwhile, or past its time."""
        await self._pending(enrolment_id)
        raise Conflict(f"enrolment {enrolment_id!r} waited past its time and expired",
                       code="enrolment_expired")

    async def _expire_due(self) -> None:
        """Pending enrolments past their time become expired and give their
        use back: done by whoever reads them next (list, poll, decide)."""
        now = time.time()
        async with self._sessions() as session:
            due = (await session.scalars(select(EnrolmentRow).where(
                EnrolmentRow.state == "pending", EnrolmentRow.expires_at <= now))).all()
        for row in due:
            async with self._sessions() as session, session.begin():
                result = await session.execute(update(EnrolmentRow).where(
                    EnrolmentRow.id == row.id, EnrolmentRow.state == "pending").values(
                    state="expired", decided_at=now, decided_by="server",
                    detail="no decision in time"))
                if result.rowcount:  # type: ignore[attr-defined]
                    await self._give_back(session, row.token_id)
                    audit(session, at=now, actor="server", action="enrolment_expire",
                          targets=[row.requested_id], ref=row.id, outcome="no decision in time")


def _used_up(max_uses: int | None) -> str:
    if max_uses == 1:
        return "this enrolment token was used already; ask for a new one"
    return f"this enrolment token was used {max_uses} times, its limit; ask for a new one"


def _short(text: str | None, length: int) -> str | None:
    return None if text is None else text[:length]


def _bounded(found: Machine) -> Machine:
    # What the columns hold (PostgreSQL refuses longer strings).
    return Machine(_short(found.hostname, 255), found.fingerprint, _short(found.address, 45))

