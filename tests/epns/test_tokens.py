"""epns.tokens: agent tokens signed by the server's Ed25519 key."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from epns import tokens
from epns.errors import BadToken
from epns.tokens import TokenClaims, b64decode, b64encode, sign_token, verify_token

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _resign(key: Ed25519PrivateKey, claims: object) -> str:
    """A token with arbitrary claims, validly signed."""
    body = b64encode(json.dumps(claims).encode())
    signed = f"v1.{body}"
    return f"{signed}.{b64encode(key.sign(signed.encode()))}"


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"\xff\xfe\x00", bytes(range(256))])
def test_b64_round_trip_without_padding(data: bytes) -> None:
    text = b64encode(data)
    assert "=" not in text
    assert "+" not in text
    assert "/" not in text
    assert b64decode(text) == data


def test_round_trip(key: Ed25519PrivateKey) -> None:
    token = sign_token(key, "agent-1", now=NOW + 0.9, ttl=3600)
    version, _, _ = token.split(".")
    assert version == "v1"
    claims = verify_token(key.public_key(), token, now=NOW)
    assert claims.subject == "agent-1"
    assert claims.issued_at == int(NOW)
    assert claims.expires_at == int(NOW) + 3600
    assert isinstance(claims, TokenClaims)
    assert len(claims.token_id) == 16
    int(claims.token_id, 16)  # hex


def test_each_token_has_its_own_id(key: Ed25519PrivateKey) -> None:
    ids = {
        verify_token(key.public_key(), sign_token(key, "a", now=NOW, ttl=60), now=NOW).token_id
        for _ in range(20)
    }
    assert len(ids) == 20


@pytest.mark.parametrize("agent_id", ["", "a/b", "+", "#", "$x", "x" * 65])
def test_sign_refuses_invalid_agent_id(key: Ed25519PrivateKey, agent_id: str) -> None:
    with pytest.raises(BadToken, match="invalid agent id"):
        sign_token(key, agent_id, now=NOW, ttl=60)


def test_wrong_key(key: Ed25519PrivateKey) -> None:
    token = sign_token(Ed25519PrivateKey.generate(), "agent-1", now=NOW, ttl=60)
    with pytest.raises(BadToken, match="signature does not verify"):
        verify_token(key.public_key(), token, now=NOW)


def test_tampered_claims(key: Ed25519PrivateKey) -> None:
    token = sign_token(key, "agent-1", now=NOW, ttl=60)
    version, body, signature = token.split(".")
    claims = json.loads(b64decode(body))
    claims["sub"] = "agent-2"
    forged = f"{version}.{b64encode(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(BadToken, match="signature does not verify"):
        verify_token(key.public_key(), forged, now=NOW)


def test_tampered_signature(key: Ed25519PrivateKey) -> None:
    token = sign_token(key, "agent-1", now=NOW, ttl=60)
    version, body, signature = token.split(".")
    raw = bytearray(b64decode(signature))
    raw[0] ^= 1
    with pytest.raises(BadToken, match="signature does not verify"):
        verify_token(key.public_key(), f"{version}.{body}.{b64encode(bytes(raw))}", now=NOW)


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1.abc", "v1.a.b.c", "v2.abc.def", "V1.abc.def", "v1.abc.!!!", "v1.abc."],
)
def test_malformed(key: Ed25519PrivateKey, token: str) -> None:
    with pytest.raises(BadToken):
        verify_token(key.public_key(), token, now=NOW)


def test_wrong_version_of_a_valid_signature(key: Ed25519PrivateKey) -> None:
    token = sign_token(key, "agent-1", now=NOW, ttl=60)
    _, body, signature = token.split(".")
    with pytest.raises(BadToken, match=r"v1\.<claims>\.<signature>"):
        verify_token(key.public_key(), f"v2.{body}.{signature}", now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        [],
        "text",
        {"sub": "agent-1", "iat": 0, "exp": 0},
        {"sub": "agent-1", "iat": "x", "exp": 0, "jti": "j"},
        {"sub": "agent-1", "iat": 0, "exp": None, "jti": "j"},
    ],
)
def test_signed_but_invalid_claims(key: Ed25519PrivateKey, claims: object) -> None:
    with pytest.raises(BadToken, match="claims are not valid JSON"):
        verify_token(key.public_key(), _resign(key, claims), now=NOW)


def test_signed_claims_that_are_not_json(key: Ed25519PrivateKey) -> None:
    signed = f"v1.{b64encode(b'not json')}"
    token = f"{signed}.{b64encode(key.sign(signed.encode()))}"
    with pytest.raises(BadToken, match="claims are not valid JSON"):
        verify_token(key.public_key(), token, now=NOW)


def test_signed_claims_with_invalid_subject(key: Ed25519PrivateKey) -> None:
    token = _resign(key, {"sub": "a/+", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j"})
    with pytest.raises(BadToken, match="subject 'a/\\+' is not a valid agent id"):
        verify_token(key.public_key(), token, now=NOW)


def test_expiry_allows_clock_skew(key: Ed25519PrivateKey) -> None:
    token = sign_token(key, "agent-1", now=NOW, ttl=60)
    expires = int(NOW) + 60
    assert verify_token(key.public_key(), token, now=expires + tokens.CLOCK_SKEW).subject
    with pytest.raises(BadToken, match="expired"):
        verify_token(key.public_key(), token, now=expires + tokens.CLOCK_SKEW + 1)


def test_issued_in_the_future(key: Ed25519PrivateKey) -> None:
    token = sign_token(key, "agent-1", now=NOW, ttl=3600)
    assert verify_token(key.public_key(), token, now=NOW - tokens.CLOCK_SKEW).subject
    with pytest.raises(BadToken, match="issued in the future"):
        verify_token(key.public_key(), token, now=NOW - tokens.CLOCK_SKEW - 1)
