"""epns.identity.authenticate: certificates, tokens, and every refusal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from epns import errors, pki, tokens
from epns.errors import BadToken, ClientIdMismatch, IdentityError, NoCredentials, Revoked
from epns.identity import (
    AGENT_OU,
    SERVER_OU,
    Credentials,
    Identity,
    Method,
    Role,
    authenticate,
    identity_from_certificate,
)
from epns.revocation import RevocationList, parse_revocations

NOW = 1_700_000_000.0
NOBODY_REVOKED = RevocationList()


def _der(pem_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def _serial(der: bytes) -> str:
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


@pytest.fixture(scope="module")
def id_pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def ca(id_pki_dir: Path) -> pki.Pair:
    return pki.create_ca(id_pki_dir)


@pytest.fixture(scope="module")
def agent_der(ca: pki.Pair, id_pki_dir: Path) -> bytes:
    out = pki.create_client_cert(
        ca, pki.Pair(id_pki_dir / "agent-1.crt", id_pki_dir / "agent-1.key"), "agent-1"
    )
    return _der(out.cert)


@pytest.fixture(scope="module")
def server_der(ca: pki.Pair, id_pki_dir: Path) -> bytes:
    out = pki.create_client_cert(
        ca,
        pki.Pair(id_pki_dir / "server.crt", id_pki_dir / "server.key"),
        pki.SERVER_CLIENT_NAME,
        server=True,
    )
    return _der(out.cert)


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _self_signed_der(attributes: list[x509.NameAttribute]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attributes)
    start = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0xABCDEF)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _cert_credentials(der: bytes, client_id: str) -> Credentials:
    return Credentials(client_id=client_id, username=None, password=None, peer_certificate_der=der)


def _token_credentials(token: str, client_id: str = "agent-1",
                       username: str | None = "agent-1") -> Credentials:
    return Credentials(client_id=client_id, username=username, password=token,
                       peer_certificate_der=None)


# --- certificates -------------------------------------------------------------------


def test_agent_certificate(agent_der: bytes) -> None:
    identity = authenticate(
        _cert_credentials(agent_der, "agent-1"), token_key=None, revoked=NOBODY_REVOKED, now=NOW
    )
    assert identity == Identity(
        "agent-1", Role.AGENT, Method.CERTIFICATE, serial=_serial(agent_der), token_id=None
    )
    assert identity.serial == identity.serial.lower()


def test_server_certificate(server_der: bytes) -> None:
    identity = authenticate(
        _cert_credentials(server_der, pki.SERVER_CLIENT_NAME),
        token_key=None,
        revoked=NOBODY_REVOKED,
        now=NOW,
    )
    assert identity.name == "epns-server"
    assert identity.role is Role.SERVER
    assert identity.method is Method.CERTIFICATE


def test_role_comes_from_the_ou_not_the_cn() -> None:
    der = _self_signed_der([
        x509.NameAttribute(NameOID.COMMON_NAME, "epns-server"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, AGENT_OU),
    ])
    assert identity_from_certificate(der).role is Role.AGENT
    der = _self_signed_der([
        x509.NameAttribute(NameOID.COMMON_NAME, "anything"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SERVER_OU),
    ])
    assert identity_from_certificate(der).role is Role.SERVER
    der = _self_signed_der([x509.NameAttribute(NameOID.COMMON_NAME, "no-ou")])
    identity = identity_from_certificate(der)
    assert identity.role is Role.AGENT
    assert identity.serial == "abcdef"


@pytest.mark.parametrize(
    "attributes",
    [
        [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, AGENT_OU)],
        [x509.NameAttribute(NameOID.COMMON_NAME, "a/b")],
        [x509.NameAttribute(NameOID.COMMON_NAME, "+")],
        [x509.NameAttribute(NameOID.COMMON_NAME, "$SYS")],
    ],
    ids=["no-cn", "slash", "plus", "dollar"],
)
def test_certificate_with_unusable_cn(attributes: list[x509.NameAttribute]) -> None:
    with pytest.raises(NoCredentials, match="is not a valid agent id") as info:
        authenticate(
            _cert_credentials(_self_signed_der(attributes), "x"),
            token_key=None,
            revoked=NOBODY_REVOKED,
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_NOT_AUTHORIZED


def test_certificate_wins_over_token(agent_der: bytes, signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "agent-2", now=NOW, ttl=3600)
    credentials = Credentials("agent-1", "agent-2", token, agent_der)
    identity = authenticate(
        credentials, token_key=signing_key.public_key(), revoked=NOBODY_REVOKED, now=NOW
    )
    assert identity.method is Method.CERTIFICATE
    assert identity.name == "agent-1"


def test_certificate_client_id_mismatch(agent_der: bytes) -> None:
    with pytest.raises(ClientIdMismatch, match="'agent-2' does not match") as info:
        authenticate(
            _cert_credentials(agent_der, "agent-2"),
            token_key=None,
            revoked=NOBODY_REVOKED,
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_IDENTIFIER_REJECTED


def test_server_certificate_client_id_mismatch(server_der: bytes) -> None:
    with pytest.raises(ClientIdMismatch):
        authenticate(
            _cert_credentials(server_der, "agent-1"),
            token_key=None,
            revoked=NOBODY_REVOKED,
            now=NOW,
        )


# --- tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["agent-1", None])
def test_token_identity(signing_key: Ed25519PrivateKey, username: str | None) -> None:
    token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    claims = tokens.verify_token(signing_key.public_key(), token, now=NOW)
    identity = authenticate(
        _token_credentials(token, username=username),
        token_key=signing_key.public_key(),
        revoked=NOBODY_REVOKED,
        now=NOW + 10,
    )
    assert identity == Identity(
        "agent-1", Role.AGENT, Method.TOKEN, serial=None, token_id=claims.token_id
    )


def test_token_is_never_the_server_role(signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "epns-server", now=NOW, ttl=3600)
    identity = authenticate(
        _token_credentials(token, client_id="epns-server", username="epns-server"),
        token_key=signing_key.public_key(),
        revoked=NOBODY_REVOKED,
        now=NOW,
    )
    assert identity.role is Role.AGENT


def test_token_forged(signing_key: Ed25519PrivateKey) -> None:
    forger = Ed25519PrivateKey.generate()
    token = tokens.sign_token(forger, "agent-1", now=NOW, ttl=3600)
    with pytest.raises(BadToken, match="signature does not verify") as info:
        authenticate(
            _token_credentials(token),
            token_key=signing_key.public_key(),
            revoked=NOBODY_REVOKED,
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_BAD_USERNAME_OR_PASSWORD


def test_token_expired(signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=60)
    later = NOW + 60 + tokens.CLOCK_SKEW + 1
    with pytest.raises(BadToken, match="expired") as info:
        authenticate(
            _token_credentials(token),
            token_key=signing_key.public_key(),
            revoked=NOBODY_REVOKED,
            now=later,
        )
    assert info.value.connack_code == errors.CONNACK_BAD_USERNAME_OR_PASSWORD


def test_token_wrong_username(signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    with pytest.raises(BadToken, match="token is for 'agent-1' but username is 'agent-2'"):
        authenticate(
            _token_credentials(token, client_id="agent-2", username="agent-2"),
            token_key=signing_key.public_key(),
            revoked=NOBODY_REVOKED,
            now=NOW,
        )


@pytest.mark.parametrize("token", ["garbage", "v1.a.b", "v2.x.y", "v1..", "a.b.c.d"])
def test_token_malformed(signing_key: Ed25519PrivateKey, token: str) -> None:
    with pytest.raises(BadToken) as info:
        authenticate(
            _token_credentials(token),
            token_key=signing_key.public_key(),
            revoked=NOBODY_REVOKED,
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_BAD_USERNAME_OR_PASSWORD


def test_token_login_disabled(signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    with pytest.raises(BadToken, match="token login is disabled") as info:
        authenticate(_token_credentials(token), token_key=None, revoked=NOBODY_REVOKED, now=NOW)
    assert info.value.connack_code == errors.CONNACK_BAD_USERNAME_OR_PASSWORD


def test_token_client_id_mismatch(signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    with pytest.raises(ClientIdMismatch) as info:
        authenticate(
            _token_credentials(token, client_id="agent-2", username=None),
            token_key=signing_key.public_key(),
            revoked=NOBODY_REVOKED,
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_IDENTIFIER_REJECTED


# --- no credentials -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("agent-1", None), ("agent-1", ""), (None, "")],
)
def test_no_credentials(
    signing_key: Ed25519PrivateKey, username: str | None, password: str | None
) -> None:
    credentials = Credentials("agent-1", username, password, None)
    with pytest.raises(NoCredentials, match="no client certificate and no token") as info:
        authenticate(
            credentials, token_key=signing_key.public_key(), revoked=NOBODY_REVOKED, now=NOW
        )
    assert info.value.connack_code == errors.CONNACK_NOT_AUTHORIZED


# --- revocation ---------------------------------------------------------------------


def test_revoked_certificate_by_agent(agent_der: bytes) -> None:
    with pytest.raises(Revoked, match=r"agent:agent-1") as info:
        authenticate(
            _cert_credentials(agent_der, "agent-1"),
            token_key=None,
            revoked=parse_revocations("agent:agent-1\n"),
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_NOT_AUTHORIZED


def test_revoked_certificate_by_serial(agent_der: bytes, server_der: bytes) -> None:
    serial = _serial(agent_der)
    revoked = parse_revocations(f"serial:{serial.upper()}\n")
    with pytest.raises(Revoked, match=f"serial:{serial}"):
        authenticate(
            _cert_credentials(agent_der, "agent-1"), token_key=None, revoked=revoked, now=NOW
        )
    # another certificate is unaffected by that serial
    identity = authenticate(
        _cert_credentials(server_der, "epns-server"), token_key=None, revoked=revoked, now=NOW
    )
    assert identity.role is Role.SERVER


def test_revoked_token_by_agent(signing_key: Ed25519PrivateKey) -> None:
    token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    with pytest.raises(Revoked, match="agent:agent-1"):
        authenticate(
            _token_credentials(token),
            token_key=signing_key.public_key(),
            revoked=parse_revocations("agent-1\n"),
            now=NOW,
        )


def test_revoked_token_by_id(signing_key: Ed25519PrivateKey) -> None:
    revoked_token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    fresh_token = tokens.sign_token(signing_key, "agent-1", now=NOW, ttl=3600)
    jti = tokens.verify_token(signing_key.public_key(), revoked_token, now=NOW).token_id
    revoked = parse_revocations(f"token:{jti}\n")
    with pytest.raises(Revoked, match=f"token:{jti}") as info:
        authenticate(
            _token_credentials(revoked_token),
            token_key=signing_key.public_key(),
            revoked=revoked,
            now=NOW,
        )
    assert info.value.connack_code == errors.CONNACK_NOT_AUTHORIZED
    # a newly issued token of the same agent still works
    identity = authenticate(
        _token_credentials(fresh_token),
        token_key=signing_key.public_key(),
        revoked=revoked,
        now=NOW,
    )
    assert identity.token_id != jti


def test_revocation_of_another_agent_does_not_refuse(agent_der: bytes) -> None:
    identity = authenticate(
        _cert_credentials(agent_der, "agent-1"),
        token_key=None,
        revoked=parse_revocations("agent:agent-2\nserial:ff\ntoken:x\n"),
        now=NOW,
    )
    assert identity.name == "agent-1"


def test_all_identity_errors_are_identity_errors() -> None:
    for cls in (NoCredentials, BadToken, ClientIdMismatch, Revoked):
        assert issubclass(cls, IdentityError)
        assert issubclass(cls, errors.EPNSError)
    assert {cls.connack_code for cls in (NoCredentials, Revoked)} == {
        errors.CONNACK_NOT_AUTHORIZED
    }
    assert (errors.CONNACK_IDENTIFIER_REJECTED, errors.CONNACK_BAD_USERNAME_OR_PASSWORD,
            errors.CONNACK_NOT_AUTHORIZED) == (2, 4, 5)
