"""The agent renews its identity before it expires (``epns.renewal`` decides when).

A certificate agent makes a new key and sends its CSR; a token agent asks for
a new token. Both go to ``POST /api/v1/agents/{id}/renew`` on the sync's
channel and ways (the same server URLs, proxy or direct), proven by the
identity the agent holds, so nothing new has to be trusted. The old identity
stays in use until the whole new one is in hand and on disk:

- the new files are written next to the old ones (``.NAME.new``: written,
  fsynced, the key 0600), then renamed over them, the key first; a crash
  between the two renames is completed at the next start (``recover``);
- the renames run on the event loop with no await between them, so a sync
  (which reads the files at each exchange) never sees half of a pair.

A failed renewal (server down, a refusal) is logged and retried with full
jitter; the agent keeps working on the identity it has meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_push import platform
from agent_push.http_exchange import ExchangeJob, exchange
from agent_push.sync import SyncWays
from epns import renewal
from epns.agent_config import AgentSettings, IdentitySettings
from epns.errors import PKIError
from epns.logs import event
from epns.renewal import Lifetime

log = logging.getLogger(__name__)

# The longest single sleep while waiting for a due time: a machine that slept
# or a clock that was set notices within this.
MAX_NAP = 300.0
# Bytes of the server's answer to a renewal: a certificate or a token.
MAX_ANSWER = 64 * 1024


@dataclass(frozen=True, slots=True)
class Renewed:
    """A new identity in hand: a certificate and its key (PEM), or a token."""

    certificate: bytes | None
    key: bytes | None
    token: str | None
    name: str  # the certificate's serial or the token's id
    lifetime: Lifetime


def renew_path(agent_id: str) -> str:
    """Where an agent renews its identity."""
    return f"/api/v1/agents/{agent_id}/renew"


def current_lifetime(identity: IdentitySettings) -> Lifetime:
    """The validity of the identity the agent uses: its certificate when it
    has one (the broker sees that first), else its token; PKIError when it
    cannot be read."""
    try:
        if identity.cert is not None:
            return renewal.certificate_lifetime(renewal.pem_der(identity.cert.read_bytes()))
        assert identity.token_file is not None  # IdentitySettings refuses neither
        return renewal.token_lifetime(identity.token_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PKIError(f"cannot read the agent's identity: {exc}") from exc


def _staged(path: Path) -> Path:
    return path.with_name(f".{path.name}.new")


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """``data`` written and fsynced next to ``path``; the staged file's path."""
    staged = _staged(path)
    platform.write_file(staged, data, mode)
    return staged


def _sync_dirs(*paths: Path) -> None:
    for directory in {p.parent for p in paths}:
        platform.sync_directory(directory)


def recover(identity: IdentitySettings) -> str | None:
    """Finish or undo an installation a crash interrupted; what was done, if
    anything. The key is renamed first: a staged certificate without a
    staged key means the new key is in place and its certificate, complete
    (fsynced before any rename), is not yet; a staged key means no rename
    happened and the old pair is whole."""
    if identity.cert is None or identity.key is None:
        if identity.token_file is not None and _staged(identity.token_file).exists():
            _staged(identity.token_file).unlink()
            return "removed a token staged before a crash"
        return None
    cert, key = _staged(identity.cert), _staged(identity.key)
    if key.exists():
        key.unlink()
        cert.unlink(missing_ok=True)
        return "removed a certificate and key staged before a crash"
    if cert.exists():
        os.replace(cert, identity.cert)
        _sync_dirs(identity.cert)
        return "installed the renewed certificate whose key was in place before a crash"
    return None


def install(identity: IdentitySettings, renewed: Renewed) -> None:
    """Put ``renewed`` in place of the current identity's files, atomically
    per file; the key pair's two renames with nothing between them."""
    if renewed.token is not None:
        assert identity.token_file is not None
        staged = _stage(identity.token_file, renewed.token.encode() + b"\n", 0o600)
        os.replace(staged, identity.token_file)
        _sync_dirs(identity.token_file)
        return
    assert identity.cert is not None
    assert identity.key is not None
    assert renewed.key is not None
    assert renewed.certificate is not None
    if identity.cert == identity.key:
        # One PEM holding both (load_cert_chain reads each from it): two
        # staged files under its one name would leave the certificate alone
        # and the key lost.
        staged = _stage(identity.key, renewed.certificate + renewed.key, 0o600)
        os.replace(staged, identity.key)
        _sync_dirs(identity.key)
        return
    try:
        key = _stage(identity.key, renewed.key, 0o600)
        cert = _stage(identity.cert, renewed.certificate, 0o644)
        _sync_dirs(identity.key, identity.cert)
    except OSError:
        # The certificate first: a crash in between must not leave a staged
        # certificate alone, which ``recover`` would install without its key.
        for path in (identity.cert, identity.key):
            _staged(path).unlink(missing_ok=True)
        raise
    os.replace(key, identity.key)
    os.replace(cert, identity.cert)
    _sync_dirs(identity.key, identity.cert)


def _new_key_and_csr(agent_id: str) -> tuple[bytes, bytes]:
    # Imported here: cryptography's x509 costs the idle agent 2 MiB, and a
    # renewal happens a few times in its life.
    from epns.pki import create_agent_csr  # noqa: PLC0415

    return create_agent_csr(agent_id)


def _check_certificate(agent_id: str, certificate: bytes, key: bytes) -> Lifetime:
    """The lifetime of the certificate the server answered, once it is for
    ``agent_id`` and for the key the agent made; PKIError otherwise."""
    from cryptography import x509  # noqa: PLC0415 - see _new_key_and_csr
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    try:
        cert = x509.load_pem_x509_certificate(certificate)
        private = serialization.load_pem_private_key(key, password=None)
    except ValueError as exc:
        raise PKIError(f"the server's certificate cannot be read: {exc}") from exc
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [agent_id]:
        raise PKIError(f"the server's certificate is for {names}, not {agent_id!r}")
    if cert.public_key() != private.public_key():
        raise PKIError("the server's certificate is not for the key the agent made")
    return renewal.certificate_lifetime(cert.public_bytes(serialization.Encoding.DER))


class Renewer:
    """Renews the agent's identity when due, or when asked (``request_now``).

    ``ways`` are the sync's (``agent_push.sync.SyncWays``); ``installed`` is
    called once the new identity's files are in place, to switch the
    connections to it; ``report`` is told the state for the status file."""

    def __init__(self, settings: AgentSettings, ways: SyncWays, *,
                 tls_ca: Path | None, token: Callable[[], str | None],
                 installed: Callable[[Renewed], None],
                 report: Callable[[dict[str, Any]], None]) -> None:
        self._settings = settings
        self._identity = settings.identity
        self._ways = ways
        self._ca = tls_ca
        self._token = token
        self._installed = installed
        self._report = report
        self._asked = asyncio.Event()
        self._failures = 0
        # Where in the due window (epns.renewal.SPREAD) this agent renews.
        self._draw = random.random()  # noqa: S311 - a spread, not a secret
        self.state: dict[str, Any] = {}

    def request_now(self) -> None:
        """Renew at once (the server's ``renew`` task), whatever the age."""
        self._asked.set()

    async def run(self) -> None:
        """Renew whenever due, until cancelled."""
        retry_at: float | None = None
        while True:
            try:
                life = current_lifetime(self._identity)
            except PKIError as exc:
                event(log, "renewal_unreadable", logging.ERROR, reason=str(exc),
                      action=f"looking again in {MAX_NAP:g} s")
                await self._nap_until(time.time() + MAX_NAP)
                continue
            due = life.due_at(self._draw) if retry_at is None else retry_at
            self._tell(expires_at=life.not_after, next_renewal=due)
            await self._nap_until(due)
            asked = self._asked.is_set()
            self._asked.clear()
            why = "asked by the server" if asked else "due"
            try:
                retry_at = await self._attempt(life, why)
            except Exception as exc:  # a bug must cost one renewal, not all those to come
                log.exception("renewal_internal_error")
                retry_at = self._failed(life, time.time(), why, exc)

    async def _attempt(self, life: Lifetime, why: str) -> float | None:
        """One renewal; None when it worked, else when to try again."""
        now = time.time()
        try:
            renewed = await self._renew()
            install(self._identity, renewed)
        except (PKIError, OSError) as exc:
            # OSError: the identity's directory is not writable by the agent
            # (docs/identity.md); the old files are untouched.
            return self._failed(life, now, why, exc)
        self._failures = 0
        event(log, "identity_renewed", why=why, id=renewed.name,
              expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                       time.gmtime(renewed.lifetime.not_after)),
              previous_expires_in=round(life.left(now)))
        self._tell(last_renewal={"at": now, "ok": True, "detail": f"renewed: {renewed.name}"},
                   expires_at=renewed.lifetime.not_after)
        self._installed(renewed)
        return None

    def _failed(self, life: Lifetime, now: float, why: str, exc: Exception) -> float:
        """Log a failed renewal; when to try again."""
        self._failures += 1
        delay = renewal.retry_delay(self._failures, base=self._settings.renewal.retry_base,
                                    cap=self._settings.renewal.retry_cap,
                                    draw=random.random(),  # noqa: S311 - jitter
                                    left=life.left(now))
        event(log, "renewal_failed", logging.WARNING, why=why, reason=str(exc) or repr(exc),
              failures=self._failures, retry_in=round(delay, 2),
              expires_in=round(life.left(now)), action="keeps using the current identity")
        self._tell(last_renewal={"at": now, "ok": False, "detail": (str(exc) or repr(exc))[:300]})
        return now + delay

    async def _nap_until(self, at: float) -> None:
        while not self._asked.is_set() and (left := at - time.time()) > 0:
            try:
                await asyncio.wait_for(self._asked.wait(), min(left, MAX_NAP))
            except TimeoutError:
                continue

    def _tell(self, **changes: Any) -> None:
        self.state.update(changes)
        self._report(dict(self.state))

    async def _renew(self) -> Renewed:
        """Ask the server; PKIError saying why it did not work."""
        agent_id = self._identity.agent_id
        key = csr = None
        if self._identity.cert is not None:
            key, csr = await asyncio.to_thread(_new_key_and_csr, agent_id)
        body = json.dumps({"csr": csr.decode()} if csr is not None else {}).encode()
        answer = await self._post(body)
        try:
            data = json.loads(answer)
            if key is not None:
                certificate = str(data["certificate"]).encode()
                lifetime = _check_certificate(agent_id, certificate, key)
                return Renewed(certificate, key, None, str(data.get("serial")), lifetime)
            token = str(data["token"]).strip()
            return Renewed(None, None, token, str(data.get("token_id")),
                           renewal.token_lifetime(token))
        except (ValueError, KeyError, TypeError) as exc:
            raise PKIError(f"the server's renewal answer is unusable: {exc!r}") from exc

    async def _post(self, body: bytes) -> bytes:
        sync, timeouts = self._settings.sync, self._settings.timeouts
        error = "no way to the server to try (sync.url)"
        for way in self._ways.ways():
            server = way.url.rstrip("/")
            job = ExchangeJob(
                url=server + renew_path(self._identity.agent_id), server=server, format="json",
                body=body, fetch=False, ca=self._ca, cert=self._identity.cert,
                key=self._identity.key, token=self._token(),
                proxy_url=None if way.proxy is None else way.proxy.url(),
                timeout=sync.timeout, timeouts=timeouts, max_retries=0,
                max_retry_after=sync.max_retry_after, answered=True)
            try:
                async with asyncio.timeout(4 * (sync.timeout + timeouts.tls_handshake
                                                + timeouts.tcp_connect)):
                    result = await exchange(job)
            except TimeoutError:
                error = f"the renewal with {server} did not finish in time"
                continue
            if result.error is None and result.reply is not None:
                if len(result.reply) > MAX_ANSWER:
                    raise PKIError(f"the server's renewal answer is over {MAX_ANSWER} bytes")
                self._ways.worked(way)
                return result.reply
            error = result.error or f"the server answered {result.status} without a body"
            if result.fault is None:
                break  # the server answered: another way would hear the same
            self._ways.failed(way, result.fault, error)
        raise PKIError(error)
