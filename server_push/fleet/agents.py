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

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import pki, tokens, topics
from epns.errors import Conflict, NotFound
from epns.logs import event
from epns.server_config import ServerSettings
from server_push.fleet.bus import Bus
from server_push.security.revocations import RevocationStore
from server_push.store.history import audit, remember
from server_push.store.models import Agent

log = logging.getLogger(__name__)

AuthKind = Literal["certificate", "token"]
MAX_GROUPS = 32


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

    def _pki(self, name: str) -> Path:
        return self._settings.pki.dir / name

    async def create(self, agent_id: str, groups: Sequence[str], auth: AuthKind,
                     actor: str) -> Bundle:
        """Register a new agent and issue its identity; Conflict if the id is taken."""
        topics.check_agent_id(agent_id)
        groups = check_groups(groups)
        now = time.time()
        files, serial, token_id = self._issue(agent_id, auth, now)
        try:
            async with self._sessions() as session, session.begin():
                await self.add(session, agent_id, groups, auth, serial=serial,
                               token_id=token_id, now=now)
                remember(session, agent_id, now, "created", f"{auth} identity, by {actor}")
                audit(session, at=now, actor=actor, action="agent_create", targets=[agent_id],
                      outcome=f"created with a {auth} identity")
        except IntegrityError as exc:
            # Two creates of one id raced past the check in add(); the loser's
            # identity was never handed out.
            raise Conflict(f"agent {agent_id!r} exists already", code="agent_exists") from exc
        self.announce(agent_id, auth, actor)
        return self.bundle(agent_id, groups, auth, files)

    @staticmethod
    async def add(session: AsyncSession, agent_id: str, groups: list[str], auth: AuthKind, *,
                  serial: str | None, token_id: str | None, now: float) -> None:
        """Add the agent's row inside the caller's transaction; Conflict when the
        id is taken (an agent the broker only discovered is taken over)."""
        existing = await session.get(Agent, agent_id)
        if existing is not None and existing.auth != "discovered":
            raise Conflict(f"agent {agent_id!r} exists already", code="agent_exists")
        if existing is None:
            session.add(Agent(id=agent_id, groups=groups, auth=auth, created_at=now,
                              cert_serial=serial, token_id=token_id, interfaces=[],
                              inventory={}, presence="unknown"))
        else:
            existing.groups, existing.auth = groups, auth
            existing.cert_serial, existing.token_id = serial, token_id

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

    def certificate_for(self, agent_id: str, csr_pem: bytes) -> tuple[str, str]:
        """A client certificate for the key of ``csr_pem``: (PEM, hex serial).
        PKIError when the CSR is unusable."""
        ca = pki.Pair(self._pki(pki.CA_CERT), self._pki(pki.CA_KEY))
        cert = pki.issue_from_csr(ca, csr_pem, agent_id, days=self._settings.pki.agent_cert_days)
        return (cert.public_bytes(Encoding.PEM).decode(), format(cert.serial_number, "x"))

    def _issue(self, agent_id: str, auth: AuthKind, now: float
               ) -> tuple[dict[str, str], str | None, str | None]:
        if auth == "token":
            key = pki.load_signing_key(self._pki(pki.SIGNING_KEY))
            token = tokens.sign_token(key, agent_id, now=now, ttl=self._settings.pki.token_ttl)
            claims = tokens.verify_token(key.public_key(), token, now=now)
            return {"agent.token": token + "\n"}, None, claims.token_id
        ca = pki.Pair(self._pki(pki.CA_CERT), self._pki(pki.CA_KEY))
        with tempfile.TemporaryDirectory() as scratch:
            out = pki.Pair(Path(scratch) / "agent.crt", Path(scratch) / "agent.key")
            pki.create_client_cert(ca, out, agent_id, days=self._settings.pki.agent_cert_days)
            files = {"agent.crt": out.cert.read_text(), "agent.key": out.key.read_text()}
            serial = format(pki.load_certificate(out.cert).serial_number, "x")
        return files, serial, None

    async def set_groups(self, agent_id: str, groups: Sequence[str], actor: str) -> list[str]:
        """Replace the agent's groups. The agent learns them with its next bundle;
        the server uses them at once to resolve group wake-ups."""
        names = check_groups(groups)
        async with self._sessions() as session, session.begin():
            agent = await session.get(Agent, agent_id)
            if agent is None:
                raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
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
            agent = await session.get(Agent, agent_id)
            if agent is None:
                raise NotFound(f"no agent {agent_id!r}", code="unknown_agent")
            if agent.revoked_at is not None:
                raise Conflict(f"agent {agent_id!r} is already revoked", code="agent_revoked")
            agent.revoked_at, agent.revoked_reason = now, reason[:500]
            # The file first: once the transaction commits, the revocation must hold.
            self._revocations.add(f"agent:{agent_id}")
            remember(session, agent_id, now, "revoked", f"by {actor}: {reason}")
            audit(session, at=now, actor=actor, action="agent_revoke", targets=[agent_id],
                  outcome=reason[:500])
        event(log, "agent_revoked", agent=agent_id, by=actor)
        self._bus.publish({"kind": "agent", "id": agent_id})
