"""Creating, grouping and revoking agents, and the config bundle an agent is
installed with.

An agent is created with an identity: a client certificate from the fleet CA
(the default) or a token signed with the server's key, for agents behind a
TLS-inspecting proxy. The bundle holds everything ``epns-agent run`` needs:
``agent.toml``, the CA, the server's public key and the identity files. The
private key exists only in the bundle; the server keeps the serial. An agent
that enrols itself (``enrol.py``) sends a CSR instead: its bundle has no key.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import pki, tokens, topics
from epns.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PKIError,
    TooManyRequests,
    Unauthorized,
)
from epns.logs import event
from epns.server_config import ServerSettings
from server_push.fleet.bus import Bus
from server_push.security.auth import AgentCaller
from server_push.security.ratelimit import RateLimiter
from server_push.security.revocations import RevocationStore
from server_push.store.history import audit, remember
from server_push.store.models import Agent

log = logging.getLogger(__name__)

AuthKind = Literal["certificate", "token"]
MAX_GROUPS = 32


# The windows of the epns_agent_identities_expiring gauges, by label.
EXPIRY_WINDOWS = (("1d", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0))


@dataclass(frozen=True, slots=True)
class Issued:
    """An identity as issued: the files of a bundle (file name to text), its
    certificate serial or token id, and its validity (UNIX seconds)."""

    files: dict[str, str]
    serial: str | None
    token_id: str | None
    issued_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Bundle:
    """An agent's installation files, by file name."""

    agent_id: str
    auth: str
    files: dict[str, str]


def check_groups(groups: Sequence[str]) -> list[str]:
    """Valid, de-duplicated group names; TopicError names a bad one."""
    names = [topics.check_name(g, "group name") for g in dict.fromkeys(groups)]
    if len(names) > MAX_GROUPS:
        raise Conflict(f"an agent can be in at most {MAX_GROUPS} groups", code="too_many_groups")
    return names


def public_url(settings: ServerSettings) -> str:
    """The URL agents and admins reach the server at."""
    return settings.http.public_url or f"https://localhost:{settings.http.port}"


def agent_config(settings: ServerSettings, agent_id: str, groups: Sequence[str],
                 auth: AuthKind) -> str:
    """The ``agent.toml`` of a bundle; paths are relative to the bundle directory."""
    url = public_url(settings)
    host = settings.mqtt.agent_host or urlsplit(url).hostname or "localhost"
    # A token agent clears the certificate paths, which default to certs/agent.*.
    identity = ('cert = "agent.crt"\nkey = "agent.key"' if auth == "certificate"
                else 'cert = ""\nkey = ""\ntoken_file = "agent.token"')
    ports = ", ".join(str(p) for p in settings.mqtt.agent_ports)
    group_list = ", ".join(f'"{g}"' for g in groups)
    # The broker's one port carries HTTPS too: where only 443 passes (a
    # stock Squid, a strict firewall) the sync goes there.
    one_port = settings.http.one_port
    backup = f"https://{_url_host(host)}:{one_port}"
    backups = f'"{backup}"' if one_port and backup != url.rstrip("/") else ""
    return f"""# epns agent {agent_id}: run with  epns-agent run --config agent.toml
state_dir = "state"

[identity]
agent_id = "{agent_id}"
{identity}
groups = [{group_list}]

[broker]
host = "{host}"
ports = [{ports}]
ca = "ca.crt"
server_public_key = "server.pub"

[sync]
action = "http"
url = "{url}"
backup_urls = [{backups}]
fetch = true
ca = "ca.crt"
"""


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class AgentAdmin:
    """The agent lifecycle: create (with its bundle), regroup, revoke."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: ServerSettings,
                 revocations: RevocationStore, bus: Bus) -> None:
        self._sessions = sessions
        self._settings = settings
        self._revocations = revocations
        self._bus = bus
        lifetimes = settings.identity
        self._renewal_budget = RateLimiter(lifetimes.renewals_per_hour / 60.0,
                                           lifetimes.renewal_burst)

    def _pki(self, name: str) -> Path:
        return self._settings.pki.dir / name

    async def create(self, agent_id: str, groups: Sequence[str], auth: AuthKind,
                     actor: str) -> Bundle:
        """Register a new agent and issue its identity; Conflict if the id is taken."""
        topics.check_agent_id(agent_id)
        groups = check_groups(groups)
        now = time.time()
        issued = self._issue(agent_id, auth, now)
        try:
            async with self._sessions() as session, session.begin():
                await self.add(session, agent_id, groups, auth, serial=issued.serial,
                               token_id=issued.token_id, now=now,
                               validity=(issued.issued_at, issued.expires_at))
                remember(session, agent_id, now, "created", f"{auth} identity, by {actor}")
                audit(session, at=now, actor=actor, action="agent_create", targets=[agent_id],
                      outcome=f"created with a {auth} identity")
        except IntegrityError as exc:
            # Two creates of one id raced past the check in add(); the loser's
            # identity was never handed out.
            raise Conflict(f"agent {agent_id!r} exists already", code="agent_exists") from exc
        self.announce(agent_id, auth, actor)
        return self.bundle(agent_id, groups, auth, issued.files)

    @staticmethod
    async def add(session: AsyncSession, agent_id: str, groups: list[str], auth: AuthKind, *,
                  serial: str | None, token_id: str | None, now: float,
                  validity: tuple[float, float] | None = None) -> None:
        """Add the agent's row inside the caller's transaction; Conflict when the
        id is taken (an agent the broker only discovered is taken over).
        ``validity`` is the identity's (issued at, expires at)."""
        existing = await session.get(Agent, agent_id)
        if existing is not None and existing.auth != "discovered":
            raise Conflict(f"agent {agent_id!r} exists already", code="agent_exists")
        issued_at, expires_at = validity or (None, None)
        if existing is None:
            session.add(Agent(id=agent_id, groups=groups, auth=auth, created_at=now,
                              cert_serial=serial, token_id=token_id, interfaces=[],
                              inventory={}, presence="unknown", identity_issued_at=issued_at,
                              identity_expires_at=expires_at))
        else:
            existing.groups, existing.auth = groups, auth
            existing.cert_serial, existing.token_id = serial, token_id
            existing.identity_issued_at, existing.identity_expires_at = issued_at, expires_at

    def announce(self, agent_id: str, auth: str, actor: str) -> None:
        """Log the new agent and tell the console."""
        event(log, "agent_created", agent=agent_id, auth=auth, by=actor)
        self._bus.publish({"kind": "agent", "id": agent_id})

    def bundle(self, agent_id: str, groups: Sequence[str], auth: AuthKind,
               identity: dict[str, str]) -> Bundle:
        """The bundle: the CA, the server's public key, ``identity`` (file name
        to text) and an ``agent.toml`` that names them."""
        files = {"ca.crt": self._pki(pki.CA_CERT).read_text(),
                 "server.pub": self._pki(pki.SIGNING_PUB).read_text(), **identity}
        files["agent.toml"] = agent_config(self._settings, agent_id, groups, auth)
        return Bundle(agent_id, auth, files)

    def issue_for_csr(self, agent_id: str, csr_pem: bytes) -> Issued:
        """A client certificate from the server's current CA for the key of
        ``csr_pem``, valid ``identity.certificate_lifetime`` seconds (file
        ``agent.crt``); PKIError when the CSR is unusable."""
        ca = pki.Pair(self._pki(pki.CA_CERT), self._pki(pki.CA_KEY))
        cert = pki.issue_from_csr(ca, csr_pem, agent_id,
                                  lifetime=self._settings.identity.certificate_lifetime)
        return _issued_certificate(cert, {"agent.crt": cert.public_bytes(Encoding.PEM).decode()})

    def _token(self, agent_id: str, now: float) -> Issued:
        key = pki.load_signing_key(self._pki(pki.SIGNING_KEY))
        token = tokens.sign_token(key, agent_id, now=now,
                                  ttl=self._settings.identity.token_lifetime)
        claims = tokens.verify_token(key.public_key(), token, now=now)
        return Issued({"agent.token": token + "\n"}, None, claims.token_id,
                      float(claims.issued_at), float(claims.expires_at))

    def _issue(self, agent_id: str, auth: AuthKind, now: float) -> Issued:
        if auth == "token":
            return self._token(agent_id, now)
        ca = pki.Pair(self._pki(pki.CA_CERT), self._pki(pki.CA_KEY))
        with tempfile.TemporaryDirectory() as scratch:
            out = pki.Pair(Path(scratch) / "agent.crt", Path(scratch) / "agent.key")
            pki.create_client_cert(ca, out, agent_id,
                                   days=self._settings.identity.certificate_lifetime / 86400.0)
            files = {"agent.crt": out.cert.read_text(), "agent.key": out.key.read_text()}
            return _issued_certificate(pki.load_certificate(out.cert), files)

    async def renew(self, caller: AgentCaller, csr_pem: str | None, now: float) -> Issued:
        """A new identity for the agent that proved itself as ``caller``, of
        the kind it holds: a certificate for the new key of ``csr_pem``, or a
        new token. The previous one is not revoked: it stays valid until it
        expires, so an agent whose answer was lost keeps working and asks
        again. Refused: TooManyRequests past ``identity.renewals_per_hour``,
        BadRequest for a missing, unexpected or bad CSR, Forbidden for an
        agent not registered here, Unauthorized for a revoked one."""
        agent_id = caller.agent_id
        wait = self._renewal_budget.take(agent_id, now)
        if wait > 0:
            lifetimes = self._settings.identity
            raise TooManyRequests(
                f"agent {agent_id!r} renewed too often: at most {lifetimes.renewal_burst} "
                f"at once and {lifetimes.renewals_per_hour:g} an hour; retry in {wait:.0f} s",
                retry_after=wait, code="renewal_rate_limited")
        issued = self._renewed(caller, csr_pem, now)
        previous = caller.serial or caller.token_id
        async with self._sessions() as session, session.begin():
            row = await session.get(Agent, agent_id)
            if row is None:
                raise Forbidden(f"agent {agent_id!r} is not registered on this server: it "
                                "cannot renew; enrol it", code="unknown_agent")
            if row.revoked_at is not None:
                raise Unauthorized(f"agent {agent_id!r} is revoked "
                                   f"({row.revoked_reason or 'revoked'}): it cannot renew",
                                   code="agent_revoked")
            row.auth = caller.method
            row.cert_serial, row.token_id = issued.serial, issued.token_id
            row.identity_issued_at, row.identity_expires_at = issued.issued_at, issued.expires_at
            row.renewed_at = now
            row.renewals = (row.renewals or 0) + 1
            what = (f"certificate serial {issued.serial}" if issued.serial
                    else f"token {issued.token_id}")
            outcome = (f"{what}, valid until {_utc(issued.expires_at)}; the previous one "
                       f"({previous}) stays valid until it expires")
            remember(session, agent_id, now, "renewed", outcome)
            audit(session, at=now, actor=f"agent:{agent_id}", action="agent_renew",
                  targets=[agent_id], outcome=outcome)
        event(log, "identity_renewed", agent=agent_id, method=caller.method,
              id=issued.serial or issued.token_id, previous=previous,
              expires_at=_utc(issued.expires_at))
        self._bus.publish({"kind": "agent", "id": agent_id})
        return issued

    def _renewed(self, caller: AgentCaller, csr_pem: str | None, now: float) -> Issued:
        if caller.method == "token":
            if csr_pem:
                raise BadRequest("this agent holds a token: it renews without a CSR",
                                 code="csr_not_expected")
            return self._token(caller.agent_id, now)
        if not csr_pem:
            raise BadRequest("this agent holds a certificate: send a CSR of a new key "
                             '("csr", PEM)', code="csr_required")
        try:
            pki.csr_public_key(csr_pem.encode())
        except PKIError as exc:
            raise BadRequest(f"the CSR cannot be used: {exc}", code="bad_csr") from exc
        # Checked above: a PKIError from here on is the server's own (its CA).
        return self.issue_for_csr(caller.agent_id, csr_pem.encode())

    async def expiring(self, now: float) -> tuple[dict[str, int], int]:
        """For the metrics: live (not revoked) agents whose identity expires
        within each of ``EXPIRY_WINDOWS`` (expired ones included, under
        ``expired`` too), and how many have an expiry not known yet."""
        live = Agent.revoked_at.is_(None)
        counts: dict[str, int] = {}
        async with self._sessions() as session:
            for label, window in (("expired", 0.0), *EXPIRY_WINDOWS):
                counts[label] = int(await session.scalar(
                    select(func.count()).select_from(Agent).where(
                        live, Agent.identity_expires_at <= now + window)) or 0)
            unknown = int(await session.scalar(
                select(func.count()).select_from(Agent).where(
                    live, Agent.identity_expires_at.is_(None))) or 0)
        return counts, unknown

    async def holding_certificates_before(self, since: float) -> list[str]:
        """Live certificate agents neither created nor renewed since ``since``
        (a CA switch): they still hold a certificate from the old CA."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Agent.id).where(
                    Agent.revoked_at.is_(None), Agent.auth == "certificate",
                    Agent.created_at < since,
                    (Agent.renewed_at.is_(None)) | (Agent.renewed_at < since))
                .order_by(Agent.id))
            return list(rows)

    async def set_groups(self, agent_id: str, groups: Sequence[str], actor: str) -> list[str]:
        """Replace the agent's groups. The agent learns them with its next bundle;
        the server uses them at once to resolve group wake-ups."""
        names = check_groups(groups)
        async with self._sessions() as session, session.begin():
            agent = await _existing(session, agent_id)
            agent.groups = names
            audit(session, at=time.time(), actor=actor, action="agent_groups",
                  targets=[agent_id], outcome=f"groups: {', '.join(names) or 'none'}")
        self._bus.publish({"kind": "agent", "id": agent_id})
        return names

    async def revoke(self, agent_id: str, actor: str, reason: str = "revoked by an admin"
                     ) -> None:
        """Revoke the agent: the broker closes its connection and refuses the
        next one; the sync endpoints refuse it."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            agent = await _existing(session, agent_id)
            if agent.revoked_at is not None:
                raise Conflict(f"agent {agent_id!r} is already revoked", code="agent_revoked")
            self._cut_off(agent, now, reason)
            remember(session, agent_id, now, "revoked", f"by {actor}: {reason}")
            audit(session, at=now, actor=actor, action="agent_revoke", targets=[agent_id],
                  outcome=reason[:500])
        event(log, "agent_revoked", agent=agent_id, by=actor)
        self._bus.publish({"kind": "agent", "id": agent_id})


    async def retire(self, agent_id: str, actor: str, reason: str = "retired by an admin"
                     ) -> None:
        """Retire the agent: revoked as by ``revoke`` (if it was not), its row
        and history kept with ``retired_at``; lists and totals leave it out."""
        now = time.time()
        async with self._sessions() as session, session.begin():
            agent = await _existing(session, agent_id)
            if agent.retired_at is not None:
                raise Conflict(f"agent {agent_id!r} is already retired", code="agent_retired")
            if agent.revoked_at is None:
                self._cut_off(agent, now, reason)
            agent.retired_at = now
            remember(session, agent_id, now, "retired", f"by {actor}: {reason}")
            audit(session, at=now, actor=actor, action="agent_retire", targets=[agent_id],
                  outcome=reason[:500])
        event(log, "agent_retired", agent=agent_id, by=actor)
        self._bus.publish({"kind": "agent", "id": agent_id})

    def _cut_off(self, agent: Agent, now: float, reason: str) -> None:
        """Mark ``agent`` revoked, in the caller's transaction, and add it to
        the revocation file, which the brokers read."""
        agent.revoked_at, agent.revoked_reason = now, reason[:500]
        # The file first: once the transaction commits, the revocation must hold.
        self._revocations.add(f"agent:{agent.id}")


async def _existing(session: AsyncSession, agent_id: str) -> Agent:
    """The agent's row; NotFound when there is none."""
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
    return agent


def _issued_certificate(cert: x509.Certificate, files: dict[str, str]) -> Issued:
    return Issued(files, format(cert.serial_number, "x"), None,
                  cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
