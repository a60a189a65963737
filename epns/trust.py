"""What an agent trusts, and how the server moves it on: key and CA rotation, sans-IO.

An agent starts trusting the one key it pinned at enrolment (``server.pub``).
A rotation moves it on with overlap, by **trust announcements**, each signed by
the key it names current and numbered by a serial that only grows::

    {"v": 1, "type": "trust", "serial": 2, "iat": 1700000000.0,
     "overlap_until": 1702592000.0,
     "keys": [{"key": "<raw, base64url>", "state": "current"},
              {"key": "…", "state": "next"}],
     "cas": [{"pem": "-----BEGIN CERTIFICATE-----…", "state": "current"}],
     "kid": "<id of the signing key>", "sig": "…"}

``begin`` announces the next key under the current one; agents accept
commands from both. ``finish`` announces the next key as current, signed by it,
and the old one as ``retiring`` until the last command it signed has expired;
agents then drop it by the clock. An agent accepts an announcement only when
it already trusts the key that signed it, so one that slept through a whole
rotation cannot learn the new key from the network: it refuses with
``WAY_BACK``, and an operator gives it the current key by hand.

Agents read this without ``cryptography``'s x509 or serialization modules:
keys travel raw, certificates as PEM text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from epns import fields
from epns.envelope import KeyLookup, canonical, key_id, verify_signed
from epns.errors import MalformedMessage, ReplayedMessage, UnknownSigner
from epns.tokens import PrivateKey, PublicKey, b64decode, b64encode, raw_public

__all__ = [
    "CAS_FILE",
    "STATE_FILE",
    "WAY_BACK",
    "KeyState",
    "Trust",
    "TrustedCA",
    "TrustedKey",
    "accept_announcement",
    "bootstrap",
    "ca_fingerprint",
    "ca_switched",
    "decode_trust",
    "encode_trust",
    "resume",
    "sign_announcement",
    "stored",
]

VERSION = 1
TYPE = "trust"
# In the agent's state directory: what ``stored`` gives, ``resume`` reads;
# and the CAs it trusts for the broker and the server, as PEM.
STATE_FILE = "trust.json"
CAS_FILE = "ca.pem"
# What an agent that slept through a rotation must do; its refusals say it.
WAY_BACK = ("this agent missed a whole key rotation (offline past the overlap) or the message "
            "is forged: put the server's current public key (signing.pub, shown by "
            "`epns-server rotate status`) in place with `epns-agent trust reset --key FILE` "
            "and restart the agent, or enrol it again (docs/rotation.md)")
# Bounds of what an announcement may list: a rotation needs three of each.
MAX_KEYS = 8
MAX_CAS = 8
MAX_PEM = 8 * 1024
_ED25519_BYTES = 32


class KeyState(StrEnum):
    """Where a key or CA stands in a rotation."""

    CURRENT = "current"
    # Announced, trusted, not used yet: the server signs with it after finish.
    NEXT = "next"
    # No longer used; trusted until ``until`` for what it signed before.
    RETIRING = "retiring"


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One command-signing public key (raw 32 bytes) and its state."""

    public: bytes
    state: KeyState
    until: float | None = None

    @property
    def id(self) -> str:
        """Its key id, as signed messages name it."""
        return key_id(self.key())

    def key(self) -> PublicKey:
        """The key, to verify with."""
        return PublicKey.from_public_bytes(self.public)


@dataclass(frozen=True, slots=True)
class TrustedCA:
    """One fleet CA certificate (PEM) and its state."""

    pem: str
    state: KeyState
    until: float | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, hex."""
        return ca_fingerprint(self.pem)


@dataclass(frozen=True, slots=True)
class Trust:
    """The keys and CAs an agent accepts; ``serial`` 0 is the pinned key alone."""

    serial: int
    keys: tuple[TrustedKey, ...]
    cas: tuple[TrustedCA, ...] = ()
    overlap_until: float | None = None
    issued_at: float = 0.0

    def live(self, now: float) -> Trust:
        """Without the retiring keys and CAs whose time is up."""
        keys = tuple(k for k in self.keys if k.until is None or k.until >= now)
        cas = tuple(c for c in self.cas if c.until is None or c.until >= now)
        if (keys, cas) == (self.keys, self.cas):
            return self
        return Trust(self.serial, keys, cas, self.overlap_until, self.issued_at)

    def current(self) -> TrustedKey:
        """The key the server signs with now."""
        return next(k for k in self.keys if k.state is KeyState.CURRENT)

    def lookup(self, now: float) -> KeyLookup:
        """Finds the key a message names among those live at ``now``; a message
        that names none (a server older than rotation) is checked with the
        current key."""
        keys = {k.id: k for k in self.live(now).keys}

        def find(kid: str | None) -> PublicKey:
            if kid is None:
                return self.current().key()
            found = keys.get(kid)
            if found is None:
                raise UnknownSigner(f"signed by key {kid}, which this agent does not know "
                                    f"(it knows {', '.join(keys)}): {WAY_BACK}")
            return found.key()

        return find


def ca_fingerprint(pem: str) -> str:
    """SHA-256 of the DER inside a PEM certificate, hex; MalformedMessage when
    the text holds no certificate."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start, stop = pem.find(begin), pem.find(end)
    if start < 0 or stop < start:
        raise MalformedMessage("a CA is not a PEM certificate")
    try:
        der = base64.b64decode("".join(pem[start + len(begin):stop].split()), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise MalformedMessage(f"a CA's PEM is not base64: {exc}") from exc
    return hashlib.sha256(der).hexdigest()


def ca_switched(before: Trust, after: Trust) -> bool:
    """True when ``after`` makes another CA current than ``before`` did, as a
    CA rotation's switch does: an agent with a certificate then renews it, to
    hold one from the new CA before the old is dropped. Learning the CAs
    (``begin``, or a first announcement) is no switch."""
    if not after.cas:
        return False
    current = {c.fingerprint for c in after.cas if c.state is KeyState.CURRENT}
    held = {c.fingerprint for c in before.cas if c.state is KeyState.CURRENT}
    if current == held:
        return False
    return bool(before.cas) or any(c.state is KeyState.RETIRING for c in after.cas)


def bootstrap(key: PublicKey, cas: tuple[str, ...] = ()) -> Trust:
    """The trust of a freshly enrolled agent: its pinned key (and CA)."""
    return Trust(0, (TrustedKey(raw_public(key), KeyState.CURRENT),),
                 tuple(TrustedCA(pem, KeyState.CURRENT) for pem in cas))


def encode_trust(trust: Trust) -> dict[str, Any]:
    """The JSON fields of ``trust`` (unsigned), as announced and as stored."""
    return {
        "v": VERSION,
        "type": TYPE,
        "serial": trust.serial,
        "iat": trust.issued_at,
        "overlap_until": trust.overlap_until,
        "keys": [{"key": b64encode(k.public), "state": k.state.value, "until": k.until}
                 for k in trust.keys],
        "cas": [{"pem": c.pem, "state": c.state.value, "until": c.until} for c in trust.cas],
    }


def decode_trust(data: Mapping[str, Any], what: str = "trust") -> Trust:
    """A Trust from its JSON fields; MalformedMessage names the field at fault.
    A trust has exactly one current key."""
    if data.get("v") != VERSION or data.get("type") != TYPE:
        raise MalformedMessage(f"{what} is not a version {VERSION} trust announcement")
    serial = fields.integer(data.get("serial"), f"{what}.serial", low=0, high=2**53)
    keys = tuple(_key(item, f"{what}.keys[{i}]") for i, item in enumerate(
        fields.array(data.get("keys"), f"{what}.keys", max_items=MAX_KEYS)))
    cas = tuple(_ca(item, f"{what}.cas[{i}]") for i, item in enumerate(
        fields.array(data.get("cas") or [], f"{what}.cas", max_items=MAX_CAS)))
    if sum(k.state is KeyState.CURRENT for k in keys) != 1:
        raise MalformedMessage(f"{what}.keys: exactly one key must be current")
    overlap = data.get("overlap_until")
    return Trust(serial, keys, cas,
                 None if overlap is None else fields.timestamp(overlap, f"{what}.overlap_until"),
                 fields.timestamp(data.get("iat", 0.0), f"{what}.iat"))


def _state(item: Mapping[str, Any], where: str) -> tuple[KeyState, float | None]:
    try:
        state = KeyState(str(item.get("state")))
    except ValueError as exc:
        raise MalformedMessage(f"{where}.state: {item.get('state')!r} is not current, next "
                               "or retiring") from exc
    until = item.get("until")
    return state, None if until is None else fields.timestamp(until, f"{where}.until")


def _key(value: Any, where: str) -> TrustedKey:
    item = fields.mapping(value, where)
    try:
        public = b64decode(fields.text(item.get("key"), f"{where}.key", max_length=64))
    except (ValueError, binascii.Error) as exc:
        raise MalformedMessage(f"{where}.key is not base64url") from exc
    if len(public) != _ED25519_BYTES:
        raise MalformedMessage(f"{where}.key is {len(public)} bytes, not an Ed25519 key")
    return TrustedKey(public, *_state(item, where))


def _ca(value: Any, where: str) -> TrustedCA:
    item = fields.mapping(value, where)
    pem = item.get("pem")
    # PEM has line breaks, which fields.text refuses; what matters is that it
    # holds a certificate, and ca_fingerprint decodes it.
    if not isinstance(pem, str) or len(pem) > MAX_PEM or not pem.isascii():
        raise MalformedMessage(f"{where}.pem is not a PEM certificate of at most "
                               f"{MAX_PEM} ASCII characters")
    ca_fingerprint(pem)
    return TrustedCA(pem, *_state(item, where))


def sign_announcement(trust: Trust, key: PrivateKey) -> bytes:
    """The wire bytes of ``trust`` announced, signed by ``key``, which must be
    the key ``trust`` names current (agents refuse anything else)."""
    kid = key_id(key.public_key())
    if trust.current().id != kid:
        raise ValueError(f"an announcement is signed by its current key, not by {kid}")
    body = {**encode_trust(trust), "kid": kid}
    return canonical({**body, "sig": b64encode(key.sign(canonical(body)))})


def accept_announcement(held: Trust, raw: bytes | str, *, now: float) -> Trust:
    """The trust ``raw`` announces, once verified with a key ``held`` trusts at
    ``now``; ``held`` itself when ``raw`` is the announcement already held.

    UnknownSigner (with ``WAY_BACK``) when no held key signed it,
    BadSignature when the signature fails, ReplayedMessage for an older
    announcement, MalformedMessage for one that breaks the format or is not
    signed by the key it names current."""
    data = _load(raw)
    serial = data.get("serial")
    try:
        verify_signed(data, held.lookup(now), "trust announcement")
    except UnknownSigner as exc:
        raise UnknownSigner(f"trust announcement {serial}: {exc}") from exc
    signer = data.pop("kid", None)
    trust = decode_trust(data, "trust announcement")
    if trust.serial < held.serial:
        raise ReplayedMessage(f"trust announcement {trust.serial} is older than the one "
                              f"held ({held.serial})")
    if trust.serial == held.serial:
        return held
    if trust.current().id != signer:
        raise MalformedMessage(f"trust announcement {trust.serial} is signed by key {signer}, "
                               f"not by the key it names current ({trust.current().id})")
    return trust


def _load(raw: bytes | str) -> dict[str, Any]:
    if len(raw) > MAX_KEYS * 100 + MAX_CAS * MAX_PEM * 2:
        raise MalformedMessage("trust announcement is too large")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"trust announcement is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("trust announcement is not a JSON object")
    return data


def resume(stored: Mapping[str, Any] | None, pinned: PublicKey) -> tuple[Trust, bool]:
    """The trust an agent starts with: what it stored, unless the key pinned in
    its config is not the one it was stored under (an operator put a new one
    there: the way back), then the pinned key alone. The flag says the stored
    trust was set aside."""
    pinned_id = key_id(pinned)
    if stored is None:
        return bootstrap(pinned), False
    if stored.get("pinned") != pinned_id:
        return bootstrap(pinned), True
    try:
        return decode_trust(fields.mapping(stored.get("trust"), "trust"), "stored trust"), False
    except MalformedMessage:
        return bootstrap(pinned), True


def stored(trust: Trust, pinned: PublicKey) -> dict[str, Any]:
    """What the agent writes to its state directory (``resume`` reads it)."""
    return {"pinned": key_id(pinned), "trust": encode_trust(trust)}
