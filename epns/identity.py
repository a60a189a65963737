"""Who a connecting client is, decided from what it proves.

A client proves its identity with a client certificate from the fleet CA (its CN
is the agent id, its OU the role) or, where a TLS-inspecting proxy breaks mutual
TLS, with a token signed by the server's Ed25519 key (username = agent id). Both
are checked without a database, so every broker of a cluster can check them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from epns import tokens
from epns.errors import BadToken, ClientIdMismatch, NoCredentials, Revoked
from epns.revocation import RevocationList
from epns.topics import is_valid_name

__all__ = [
    "AGENT_OU",
    "SERVER_OU",
    "Credentials",
    "Identity",
    "Method",
    "Role",
    "authenticate",
    "identity_from_certificate",
]

SERVER_OU = "epns-server"
AGENT_OU = "epns-agent"


class Role(StrEnum):
    """What a client may do; the ACL is written per role."""

    AGENT = "agent"
    SERVER = "server"


class Method(StrEnum):
    """How the identity was proven."""

    CERTIFICATE = "certificate"
    TOKEN = "token"  # noqa: S105 - the name of a method, not a secret


@dataclass(frozen=True, slots=True)
class Identity:
    """A proven client identity."""

    name: str
    role: Role
    method: Method
    serial: str | None = None
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client presented at CONNECT, transport and MQTT layers together."""

    client_id: str
    username: str | None
    password: str | None
    peer_certificate_der: bytes | None


def identity_from_certificate(der: bytes) -> Identity:
    """Read the identity of a certificate that TLS has already verified."""
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = str(cns[0].value) if cns else ""
    role = Role.SERVER if any(ou.value == SERVER_OU for ou in ous) else Role.AGENT
    if not is_valid_name(name):
        raise NoCredentials(f"client certificate CN {name!r} is not a valid agent id")
    return Identity(name, role, Method.CERTIFICATE, serial=format(cert.serial_number, "x"))


def authenticate(
    credentials: Credentials,
    *,
    token_key: tokens.PublicKey | Sequence[tokens.PublicKey] | None,
    revoked: RevocationList,
    now: float,
) -> Identity:
    """Decide who the client is, or raise the IdentityError that refuses it.

    A certificate wins over a token. The client id must equal the proven name,
    so one identity cannot take over another's session.
    """
    if credentials.peer_certificate_der is not None:
        identity = identity_from_certificate(credentials.peer_certificate_der)
    elif credentials.password:
        if not token_key:
            raise BadToken("token login is disabled: the broker has no server public key")
        claims = tokens.verify_token(token_key, credentials.password, now=now)
        if credentials.username not in (None, claims.subject):
            raise BadToken(
                f"token is for {claims.subject!r} but username is {credentials.username!r}"
            )
        identity = Identity(claims.subject, Role.AGENT, Method.TOKEN, token_id=claims.token_id)
    else:
        raise NoCredentials("no client certificate and no token")
    if credentials.client_id != identity.name:
        raise ClientIdMismatch(
            f"client id {credentials.client_id!r} does not match {identity.method} "
            f"identity {identity.name!r}"
        )
    reason = revoked.reason(identity.name, identity.serial, identity.token_id)
    if reason is not None:
        raise Revoked(f"{identity.name!r} is revoked ({reason})")
    return identity
