"""Step 1: the files the agent's configuration names, loaded as the agent loads them.

A file the agent cannot read stops the agent at start: that is a FAIL, and
the check's exit code 3. A file that loads but will be refused (an expired
certificate, a token for another agent) is a WARN here: the network steps
say whether the broker really refuses it.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from epns import pki, tls, tokens
from epns.agent_config import AgentSettings
from epns.errors import EPNSError
from epns.trust import CAS_FILE, STATE_FILE, Trust, resume
from epns_check import diagnose
from epns_check.probes import issued_by, name_of, utc_now
from epns_check.report import Finding, Result, Status, Step, passed


@dataclass
class Material:
    """What step 1 loaded, for the later steps; None where it failed."""

    fleet_cas: list[x509.Certificate] = field(default_factory=list)
    broker_context: ssl.SSLContext | None = None
    websocket_context: ssl.SSLContext | None = None
    sync_context: ssl.SSLContext | None = None
    command_key: Ed25519PublicKey | None = None
    # What the agent learnt of key rotations since (its state directory's
    # trust.json, epns.trust); the pinned key alone when it has none.
    trust: Trust | None = None
    token: str | None = None
    certificate_name: str | None = None
    # The issuer of a client certificate that is not from the fleet CA.
    foreign_issuer: str | None = None

    @property
    def fleet_ca_name(self) -> str:
        """The fleet CA's name, as issuers show it."""
        return name_of(self.fleet_cas[0].subject) if self.fleet_cas else "?"


def _row(subject: str, finding: Finding, started: float) -> Result:
    return Result(Step.CONFIG, subject, finding, time.monotonic() - started)


def _fail(detail: str, hint: str) -> Finding:
    return Finding(Status.FAIL, detail, hint)


def load(settings: AgentSettings, source: str) -> tuple[Material, list[Result]]:
    """Load and judge every file ``settings`` names."""
    started = time.monotonic()
    material = Material()
    results = [_row(source, passed(_summary(settings)), started)]
    results.append(_fleet_ca(settings.broker.ca, material))
    results.append(_command_key(settings.broker.server_public_key, material))
    if material.command_key is not None:
        material.trust = _trust(settings.state_dir, material.command_key)
    ident = settings.identity
    if ident.cert is not None and ident.key is not None:
        results += _certificate(settings, ident.cert, ident.key, material)
    elif ident.token_file is not None:
        results.append(_token(settings, ident.token_file, material))
    if material.fleet_cas and settings.sync.ca is not None:
        results.append(_sync_ca(settings.sync.ca))
    if not any(r.status is Status.FAIL for r in results):
        try:
            _contexts(settings, material)
        except EPNSError as exc:
            results.append(_row(source, _fail(str(exc), "fix the file it names"), started))
    return material, results


def _summary(settings: AgentSettings) -> str:
    broker, ident = settings.broker, settings.identity
    how = "certificate" if ident.cert is not None else "token"
    # The proxy's address only: its URL may carry the password.
    parts = urlsplit(settings.proxy.url or "")
    proxy = f", proxy {parts.hostname}:{parts.port or 3128}" if parts.hostname else ""
    return (f"agent {ident.agent_id} ({how}), broker {broker.host} ports "
            f"{', '.join(map(str, broker.ports))}{proxy}")


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError as exc:
        raise EPNSError(f"{path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise EPNSError(f"{path} is not a PEM certificate: {exc}") from exc


def _fleet_ca(path: Path, material: Material) -> Result:
    started = time.monotonic()
    try:
        material.fleet_cas = _read_certificates(path)
    except EPNSError as exc:
        return _row("broker.ca", _fail(str(exc), "put the fleet CA there (ca.crt of the "
                                                 "agent's bundle), or fix broker.ca"), started)
    ca = material.fleet_cas[0]
    return _row("broker.ca", diagnose.certificate_file(
        f"fleet CA '{name_of(ca.subject)}'", str(path), ca.not_valid_after_utc, utc_now(),
        renew="the fleet CA itself expires: plan a new CA and re-enrol the fleet"), started)


def _command_key(path: Path, material: Material) -> Result:
    started = time.monotonic()
    try:
        material.command_key = pki.load_public_key(path)
    except EPNSError as exc:
        return _row("broker.server_public_key", _fail(
            str(exc), "put the server's public key there (server.pub of the agent's bundle)"),
            started)
    return _row("broker.server_public_key",
                passed(f"{path}: the server's Ed25519 key, pinned for commands"), started)


def with_trusted_cas(settings: AgentSettings) -> AgentSettings:
    """``settings`` with the CAs the agent trusts now: after a CA rotation
    announced them, those it keeps in its state directory (ca.pem), not the
    bundle's ca.crt it started with (``agent_push.trust``)."""
    bundle, ca = settings.state_dir / CAS_FILE, settings.broker.ca
    try:
        saved = json.loads((settings.state_dir / STATE_FILE).read_text(encoding="utf-8"))
        announced = bool(saved["trust"]["cas"])
    except (OSError, ValueError, KeyError, TypeError):
        announced = False
    if ca is None or not announced or not bundle.is_file():
        return settings
    sync = settings.sync
    if sync.ca in (None, ca):
        sync = replace(sync, ca=bundle)
    return replace(settings, broker=replace(settings.broker, ca=bundle), sync=sync)


def _trust(state_dir: Path, pinned: Ed25519PublicKey) -> Trust:
    """The trust the agent would start with (a file it cannot read: none)."""
    try:
        saved = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    return resume(saved if isinstance(saved, dict) else None, pinned)[0]


def _certificate(settings: AgentSettings, cert_path: Path, key_path: Path,
                 material: Material) -> list[Result]:
    started = time.monotonic()
    try:
        cert = _read_certificates(cert_path)[0]
        _check_key(cert_path, key_path)
    except EPNSError as exc:
        return [_row("identity.cert", _fail(
            str(exc), "give the agent its certificate and key (agent.crt and agent.key of its "
                      "bundle), or fix identity.cert and identity.key"), started)]
    material.certificate_name = name_of(cert.subject)
    agent_id = settings.identity.agent_id
    results = [_row("identity.cert", diagnose.certificate_file(
        f"client certificate for '{material.certificate_name}'", str(cert_path),
        cert.not_valid_after_utc, utc_now(),
        renew="renew the agent's certificate: enrol it again"), started)]
    if material.certificate_name != agent_id:
        results.append(_row("identity.agent_id", Finding(
            Status.WARN, f"identity.agent_id is {agent_id!r}, but the certificate is for "
                         f"{material.certificate_name!r}",
            "the broker refuses the client id (CONNACK 2) or the ACL denies the topics: use "
            "the agent id the certificate was issued for"), started))
    if material.fleet_cas and not any(issued_by(cert, ca) for ca in material.fleet_cas):
        material.foreign_issuer = name_of(cert.issuer)
        results.append(_row("identity.cert", Finding(
            Status.WARN, f"the client certificate is issued by '{name_of(cert.issuer)}', not "
                         "by the fleet CA in broker.ca",
            "fine only if the broker trusts that CA; otherwise enrol the agent again"),
            started))
    return results


def _check_key(cert_path: Path, key_path: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path)
    except FileNotFoundError as exc:
        raise EPNSError(f"{key_path} does not exist") from exc
    except (ssl.SSLError, OSError) as exc:
        raise EPNSError(f"{key_path} cannot be read, or is not the key of {cert_path}: "
                        f"{exc}") from exc


def _token(settings: AgentSettings, path: Path, material: Material) -> Result:
    started = time.monotonic()
    try:
        material.token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return _row("identity.token_file", _fail(
            f"cannot read {path}: {exc.strerror or exc}",
            "give the agent its token (agent.token of its bundle), or fix "
            "identity.token_file"), started)
    if material.command_key is None:
        return _row("identity.token_file", passed(f"{path} read (not verified: no server key)"),
                    started)
    try:
        claims = tokens.verify_token(material.command_key, material.token, now=time.time())
    except EPNSError as exc:
        return _row("identity.token_file", Finding(
            Status.WARN, f"the token does not verify against the pinned server key: {exc}",
            "the broker will refuse it (CONNACK 4): issue a new token for this agent"), started)
    if claims.subject != settings.identity.agent_id:
        return _row("identity.token_file", Finding(
            Status.WARN, f"the token is for {claims.subject!r}, not for "
                         f"{settings.identity.agent_id!r}",
            "use the token issued for this agent id"), started)
    until = dt.datetime.fromtimestamp(claims.expires_at, dt.UTC)
    return _row("identity.token_file", diagnose.certificate_file(
        "token", str(path), until, utc_now(), renew="issue a new token for this agent"),
        started)


def _sync_ca(path: Path) -> Result:
    started = time.monotonic()
    try:
        _read_certificates(path)
    except EPNSError as exc:
        return _row("sync.ca", _fail(str(exc), "put the server's CA there, or fix sync.ca"),
                    started)
    return _row("sync.ca", passed(f"{path}: the server's CA for sync"), started)


def _contexts(settings: AgentSettings, material: Material) -> None:
    """The TLS contexts exactly as the agent builds them."""
    ident = settings.identity
    material.broker_context = tls.client_context(settings.broker.ca, ident.cert, ident.key,
                                                  alpn=tls.MQTT_ALPN)
    material.websocket_context = tls.client_context(settings.broker.ca, ident.cert, ident.key,
                                                     alpn=tls.WEBSOCKET_ALPN)
    material.sync_context = tls.client_context(settings.sync.ca or settings.broker.ca,
                                               ident.cert, ident.key)
