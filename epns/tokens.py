"""Agent tokens: an identity the server signs and any broker can check offline.

A token is ``v1.<base64url claims>.<base64url Ed25519 signature>``. The claims are
compact JSON: ``sub`` (agent id), ``iat``, ``exp`` and ``jti`` (token id, for
revocation). Agents present it as the MQTT password with username = agent id,
where a TLS-inspecting proxy makes client certificates impossible.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from epns.errors import BadToken
from epns.topics import is_valid_name

__all__ = [
    "CLOCK_SKEW",
    "PrivateKey",
    "PublicKey",
    "TokenClaims",
    "b64decode",
    "b64encode",
    "raw_public",
    "sign_token",
    "verify_token",
]

PrivateKey: TypeAlias = Ed25519PrivateKey
PublicKey: TypeAlias = Ed25519PublicKey

_VERSION = "v1"
# Tokens are checked against clocks on other machines; a little skew is normal.
CLOCK_SKEW = 300.0


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified content of a token."""

    subject: str
    issued_at: int
    expires_at: int
    token_id: str


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Inverse of b64encode; raises ValueError on bad input."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: PublicKey) -> bytes:
    """The 32 bytes of an Ed25519 public key."""
    return key.public_bytes_raw()


def sign_token(key: PrivateKey, agent_id: str, *, now: float, ttl: float) -> str:
    """Issue a token for ``agent_id`` valid for ``ttl`` seconds from ``now``."""
    if not is_valid_name(agent_id):
        raise BadToken(f"cannot issue a token for invalid agent id {agent_id!r}")
    claims = {
        "sub": agent_id,
        "iat": int(now),
        "exp": int(now + ttl),
        "jti": secrets.token_hex(8),
    }
    body = b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{_VERSION}.{body}"
    return f"{signed}.{b64encode(key.sign(signed.encode()))}"


def verify_token(key: PublicKey | Sequence[PublicKey], token: str, *, now: float
                 ) -> TokenClaims:
    """Return the claims of a valid token, or raise BadToken saying what is wrong.
    During a key rotation several keys verify (``epns.trust``): tokens name no
    key, and two or three signature checks cost less than a lookup."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise BadToken("token is not of the form v1.<claims>.<signature>")
    signed = f"{parts[0]}.{parts[1]}"
    if not _signed_by_one(key if isinstance(key, Sequence) else (key,), parts[2],
                          signed.encode()):
        raise BadToken("token signature does not verify against the server key")
    try:
        raw = json.loads(b64decode(parts[1]))
        claims = TokenClaims(str(raw["sub"]), int(raw["iat"]), int(raw["exp"]), str(raw["jti"]))
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error) as exc:
        raise BadToken("token claims are not valid JSON with sub, iat, exp and jti") from exc
    if not is_valid_name(claims.subject):
        raise BadToken(f"token subject {claims.subject!r} is not a valid agent id")
    if claims.expires_at + CLOCK_SKEW < now:
        raise BadToken(f"token expired at {claims.expires_at} (now {int(now)})")
    if claims.issued_at - CLOCK_SKEW > now:
        raise BadToken(f"token is issued in the future ({claims.issued_at}, now {int(now)})")
    return claims


def _signed_by_one(keys: Sequence[PublicKey], signature: str, signed: bytes) -> bool:
    try:
        raw = b64decode(signature)
    except (ValueError, binascii.Error):
        return False
    for key in keys:
        try:
            key.verify(raw, signed)
        except InvalidSignature:
            continue
        return True
    return False
