"""Rotation of the command-signing key and of the fleet CA, in the server's
PKI directory.

The steps (``epns-server rotate signing-key begin|finish|status``) write
files; the running server and the brokers notice them (``TrustWatch``,
``epns.pki.PublicKeyFile``). The files:

- ``signing.key``: the key the server signs commands and tokens with now;
- ``signing.next.key``: the next key, from ``begin`` until ``finish``;
- ``signing.pub``: every public key that verifies tokens, current first
  (brokers and the sync endpoints read it; bundles pin its first key);
- ``rotation.json``: the trust announcement (``epns.trust``) agents are
  given, and until when each old key still verifies tokens. Written last,
  so a server that sees it changed finds the keys it names in place.

``begin`` announces the next key under the current one. ``finish`` refuses
before the overlap has run out (unless forced), then signs with the next key
and announces it current, with the old one retiring: agents trust the old key
until the last command it signed has expired, brokers until the last token it
signed has.

The CA (``epns-server rotate ca begin|switch|finish|status``): ``begin``
makes the next CA (``ca-next/``) and puts it in ``ca.crt`` beside the current
one, so brokers and the HTTPS server accept client certificates from both
(they re-read ``ca.crt``), and announces both to agents, which trust both for
the servers they connect to. ``switch`` makes the next CA the one that issues
(``ca.key``, first in ``ca.crt``), gives the broker and the server
certificates from it (``broker.crt``, ``server.crt``) and announces it
current with the old one retiring: agents with a certificate renew it from
the new CA. ``finish`` leaves the new CA alone in ``ca.crt``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from epns import pki
from epns.envelope import CLOCK_SKEW, key_id
from epns.errors import ConfigError, PKIError
from epns.logs import event
from epns.tokens import PrivateKey, PublicKey, raw_public
from epns.trust import (
    KeyState,
    Trust,
    TrustedCA,
    TrustedKey,
    bootstrap,
    decode_trust,
    sign_announcement,
)

log = logging.getLogger(__name__)

ROTATION = "rotation.json"
NEXT_KEY = "signing.next.key"
# The next CA, its key, and the certificates switch gives the broker and the
# server, made here before they go in place.
CA_NEXT = "ca-next"
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?",
                       re.DOTALL)


@dataclass(frozen=True)
class Rotation:
    """The server's rotation state: the trust it announces (signed, or None
    before the first rotation) and until when each key verifies tokens."""

    trust: Trust
    announcement: bytes | None
    # Raw public key -> until when it verifies tokens (None: for good).
    token_keys: tuple[tuple[bytes, float | None], ...]
    # When a CA rotation switched to the new CA (None: none switched).
    ca_switched_at: float | None = None

    def in_progress(self) -> bool:
        """A next key is announced and not yet current."""
        return any(k.state is KeyState.NEXT for k in self.trust.keys)

    def ca_in_progress(self) -> bool:
        """A CA rotation has begun and not finished."""
        return self.ca_switched_at is not None or any(
            c.state is KeyState.NEXT for c in self.trust.cas)


def _atomic(path: Path, data: bytes, *, secret: bool = False) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


def load(directory: Path) -> Rotation:
    """The rotation state of a PKI directory; before any rotation, the
    current key alone."""
    path = directory / ROTATION
    current = pki.load_signing_key(directory / pki.SIGNING_KEY)
    if not path.exists():
        return Rotation(bootstrap(current.public_key()), None,
                        ((raw_public(current.public_key()), None),))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        announcement = data["announcement"].encode()
        signed = json.loads(announcement)
        signed.pop("sig", None)
        signed.pop("kid", None)
        trust = decode_trust(signed, str(path))
        token_keys = tuple((base64.urlsafe_b64decode(item["key"] + "=="), item["until"])
                           for item in data["token_keys"])
        switched = data.get("ca_switched_at")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return Rotation(trust, announcement, token_keys,
                    None if switched is None else float(switched))


def _save(directory: Path, rotation: Rotation) -> None:
    """``signing.pub`` first (brokers must know a key before it signs a
    token), ``rotation.json`` last (the server reloads on it)."""
    assert rotation.announcement is not None
    current = rotation.trust.current().public
    ordered = [current] + [raw for raw, _ in rotation.token_keys if raw != current]
    _atomic(directory / pki.SIGNING_PUB, b"".join(
        pki.public_pem(PublicKey.from_public_bytes(raw)) for raw in ordered))
    _atomic(directory / ROTATION, json.dumps({
        "announcement": rotation.announcement.decode(),
        "token_keys": [{"key": base64.urlsafe_b64encode(raw).decode().rstrip("="),
                        "until": until} for raw, until in rotation.token_keys],
        "ca_switched_at": rotation.ca_switched_at,
    }, indent=1).encode())


def _live_tokens(rotation: Rotation, now: float) -> list[tuple[bytes, float | None]]:
    return [(raw, until) for raw, until in rotation.token_keys if until is None or until >= now]


def begin(directory: Path, *, overlap: float, now: float) -> Rotation:
    """Make the next key and announce it under the current one; agents
    accept both from now on. The overlap is how long ``finish`` waits."""
    rotation = load(directory)
    if rotation.in_progress():
        raise ConfigError("a signing-key rotation is already under way: finish it first "
                          "(epns-server rotate signing-key finish)")
    if rotation.ca_in_progress():
        raise ConfigError("a CA rotation is under way: finish it first (one rotation at a "
                          "time: they share the announced overlap)")
    current = pki.load_signing_key(directory / pki.SIGNING_KEY)
    upcoming = PrivateKey.generate()
    _atomic(directory / NEXT_KEY, pki.private_pem(upcoming), secret=True)
    live = rotation.trust.live(now)
    trust = Trust(live.serial + 1,
                  (*live.keys, TrustedKey(raw_public(upcoming.public_key()), KeyState.NEXT)),
                  live.cas, now + overlap, now)
    tokens = [*_live_tokens(rotation, now), (raw_public(upcoming.public_key()), None)]
    made = Rotation(trust, sign_announcement(trust, current), tuple(tokens),
                    rotation.ca_switched_at)
    _save(directory, made)
    return made


def finish(directory: Path, *, now: float, command_grace: float, token_ttl: float,
           force: bool = False) -> Rotation:
    """Sign with the next key from now on and announce it current; the old
    key retires (agents: until the last command it signed expires; brokers:
    until the last token it signed does). Refuses before the announced
    overlap has run out unless ``force``."""
    rotation = load(directory)
    if not rotation.in_progress():
        raise ConfigError("no signing-key rotation is under way: begin one first")
    overlap = rotation.trust.overlap_until
    if overlap is not None and now < overlap and not force:
        raise ConfigError(
            f"the overlap runs until {_when(overlap)} ({overlap - now:.0f} s from now): an "
            "agent offline until then would not learn the next key. Wait, or --force")
    upcoming = pki.load_signing_key(directory / NEXT_KEY)
    old = rotation.trust.current()
    keys = [TrustedKey(raw_public(upcoming.public_key()), KeyState.CURRENT)]
    keys += [k for k in rotation.trust.live(now).keys
             if k.state is KeyState.RETIRING and k.public != keys[0].public]
    keys.append(TrustedKey(old.public, KeyState.RETIRING, now + command_grace + CLOCK_SKEW))
    trust = Trust(rotation.trust.serial + 1, tuple(keys), rotation.trust.cas, None, now)
    tokens = [(raw, now + token_ttl if raw == old.public else until)
              for raw, until in _live_tokens(rotation, now)]
    # The new key goes in place before anything names it current.
    _atomic(directory / pki.SIGNING_KEY, pki.private_pem(upcoming), secret=True)
    made = Rotation(trust, sign_announcement(trust, upcoming), tuple(tokens),
                    rotation.ca_switched_at)
    _save(directory, made)
    (directory / NEXT_KEY).unlink()
    return made


def _certificates(path: Path) -> list[str]:
    """The PEM certificates of a file, in order."""
    try:
        return _PEM_CERT.findall(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PKIError(f"cannot read {path}: {exc}") from exc


def _announce(directory: Path, rotation: Rotation, cas: tuple[TrustedCA, ...], *,
              now: float, overlap_until: float | None,
              switched_at: float | None) -> Rotation:
    """Announce ``cas`` (keys as they are), signed by the current key."""
    live = rotation.trust.live(now)
    trust = Trust(rotation.trust.serial + 1, live.keys, cas, overlap_until, now)
    signing = pki.load_signing_key(directory / pki.SIGNING_KEY)
    made = Rotation(trust, sign_announcement(trust, signing), rotation.token_keys, switched_at)
    _save(directory, made)
    return made


def ca_begin(directory: Path, *, overlap: float, now: float) -> Rotation:
    """Make the next CA; brokers and the server accept client certificates
    from both from now on, agents trust both for the servers they reach."""
    rotation = load(directory)
    if rotation.ca_in_progress():
        raise ConfigError("a CA rotation is already under way: switch or finish it first "
                          "(epns-server rotate ca status)")
    if rotation.in_progress():
        raise ConfigError("a signing-key rotation is under way: finish it first (one "
                          "rotation at a time: they share the announced overlap)")
    current = _certificates(directory / pki.CA_CERT)
    if not current:
        raise PKIError(f"{directory / pki.CA_CERT} holds no certificate")
    staging = directory / CA_NEXT
    shutil.rmtree(staging, ignore_errors=True)
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    made = pki.create_ca(staging, name=f"{pki.CA_NAME} {day}")
    upcoming = made.cert.read_text(encoding="ascii")
    _atomic(directory / pki.CA_CERT, (current[0] + upcoming).encode())
    return _announce(directory, rotation, (TrustedCA(current[0], KeyState.CURRENT),
                                           TrustedCA(upcoming, KeyState.NEXT)),
                     now=now, overlap_until=now + overlap, switched_at=None)


def _server_names(path: Path) -> tuple[str, ...]:
    """The names (DNS and IP) of the broker's certificate, for its successor."""
    cert = pki.load_certificate(path)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise PKIError(f"{path} names no host (no subjectAltName)") from exc
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    names += [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def ca_switch(directory: Path, *, now: float, force: bool = False) -> Rotation:
    """Issue from the next CA from now on, and give the broker and the server
    certificates from it; announced current, the old CA retiring. Refuses
    before the overlap has run out unless ``force``."""
    rotation = load(directory)
    upcoming = [c for c in rotation.trust.cas if c.state is KeyState.NEXT]
    if not upcoming:
        raise ConfigError("no CA rotation has begun: epns-server rotate ca begin")
    overlap = rotation.trust.overlap_until
    if overlap is not None and now < overlap and not force:
        raise ConfigError(
            f"the overlap runs until {_when(overlap)} ({overlap - now:.0f} s from now): an "
            "agent offline until then would not trust the new CA. Wait, or --force")
    old = next(c for c in rotation.trust.cas if c.state is KeyState.CURRENT)
    staging = directory / CA_NEXT
    issuer = pki.Pair(staging / pki.CA_CERT, staging / pki.CA_KEY)
    pki.create_broker_cert(issuer, staging, _server_names(directory / pki.BROKER_CERT))
    pki.create_client_cert(issuer, pki.Pair(staging / pki.SERVER_CERT, staging / pki.SERVER_KEY),
                           pki.SERVER_CLIENT_NAME, server=True)
    _atomic(directory / pki.CA_KEY, issuer.key.read_bytes(), secret=True)
    _atomic(directory / pki.CA_CERT, (upcoming[0].pem + old.pem).encode())
    # Each key before its certificate: a reader between the two files fails
    # to load them and looks again (epns.tls_reload).
    for name in (pki.BROKER_KEY, pki.BROKER_CERT, pki.SERVER_KEY, pki.SERVER_CERT):
        _atomic(directory / name, (staging / name).read_bytes(), secret=name.endswith(".key"))
    shutil.rmtree(staging)
    return _announce(directory, rotation, (TrustedCA(upcoming[0].pem, KeyState.CURRENT),
                                           TrustedCA(old.pem, KeyState.RETIRING)),
                     now=now, overlap_until=None, switched_at=now)


def ca_finish(directory: Path, *, now: float) -> Rotation:
    """Trust the new CA alone: brokers and the server refuse client
    certificates from the old one on new connections, agents drop it."""
    rotation = load(directory)
    if rotation.ca_switched_at is None:
        raise ConfigError("no CA rotation has switched: epns-server rotate ca switch")
    current = next(c for c in rotation.trust.cas if c.state is KeyState.CURRENT)
    _atomic(directory / pki.CA_CERT, current.pem.encode())
    return _announce(directory, rotation, (TrustedCA(current.pem, KeyState.CURRENT),),
                     now=now, overlap_until=None, switched_at=None)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def describe(rotation: Rotation, now: float) -> list[str]:
    """What ``rotate signing-key status`` prints."""
    trust = rotation.trust
    lines = [f"trust serial {trust.serial}"
             + (" (no rotation yet)" if rotation.announcement is None else "")]
    for key in trust.keys:
        drop = "" if key.until is None else (
            f", agents drop it at {_when(key.until)}" if key.until >= now else ", dropped")
        lines.append(f"  key {key.id}: {key.state.value}{drop}")
    if trust.overlap_until is not None:
        left = trust.overlap_until - now
        lines.append(f"  overlap until {_when(trust.overlap_until)} "
                     + (f"({left:.0f} s left): finish refuses before then" if left > 0
                        else "(over): finish may run"))
    for ca in trust.cas:
        lines.append(f"  CA {ca.fingerprint[:16]}: {ca.state.value}")
    if rotation.ca_switched_at is not None:
        lines.append(f"  CA switched at {_when(rotation.ca_switched_at)}: agents with a "
                     "certificate renew it from the new CA; finish once none is left")
    for raw, tokens_until in rotation.token_keys:
        if tokens_until is not None:
            lines.append(f"  tokens signed by {key_id(PublicKey.from_public_bytes(raw))} "
                         f"verify until {_when(tokens_until)}")
    return lines


class TrustWatch:
    """The running server's view of ``rotation.json``: the signing key, the
    token keys and the announcement, re-read when the file changes."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._stamp: tuple[int, int] | None = None
        self.signing_key: PrivateKey = pki.load_signing_key(directory / pki.SIGNING_KEY)
        self.rotation = load(directory)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = (self._directory / ROTATION).stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def token_keys(self, now: float | None = None) -> tuple[PublicKey, ...]:
        """The keys that verify tokens at ``now`` (default: now), current first."""
        now = time.time() if now is None else now
        current = self.rotation.trust.current().public
        raws = [current] + [raw for raw, until in self.rotation.token_keys
                            if raw != current and (until is None or until >= now)]
        return tuple(PublicKey.from_public_bytes(raw) for raw in raws)

    def refresh(self) -> bool:
        """Re-read when ``rotation.json`` changed; True when the announcement
        did (the caller announces it). A half-written rotation keeps the last
        good state, and says so."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            rotation = load(self._directory)
            key = pki.load_signing_key(self._directory / pki.SIGNING_KEY)
        except (ConfigError, PKIError) as exc:
            event(log, "rotation_unreadable", logging.ERROR, error=str(exc))
            return False
        if key_id(key.public_key()) != rotation.trust.current().id:
            event(log, "rotation_unreadable", logging.ERROR,
                  error="signing.key is not the key rotation.json names current")
            return False
        changed = rotation.announcement != self.rotation.announcement
        self.rotation, self.signing_key = rotation, key
        if changed:
            event(log, "trust_loaded", serial=rotation.trust.serial,
                  signing_key=key_id(key.public_key()))
        return changed
