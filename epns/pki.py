"""The development PKI: a fleet CA, broker and client certificates, signing key.

Everything is ECDSA P-256 except the server's command-signing key (Ed25519).
Files are written with owner-only permissions for keys. This is a dev PKI for
the all-in-one default; production fleets may bring their own CA.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from epns.errors import PKIError
from epns.identity import AGENT_OU, SERVER_OU
from epns.topics import SERVER_NAME, check_name

__all__ = [
    "BROKER_CERT",
    "BROKER_KEY",
    "CA_CERT",
    "CA_KEY",
    "CA_NAME",
    "MAX_CSR_BYTES",
    "REVOKED",
    "SERVER_CERT",
    "SERVER_CLIENT_NAME",
    "SERVER_KEY",
    "SIGNING_KEY",
    "SIGNING_PUB",
    "Pair",
    "PublicKeyFile",
    "agent_pair",
    "create_agent_csr",
    "create_broker_cert",
    "create_ca",
    "create_client_cert",
    "create_signing_key",
    "csr_public_key",
    "init_dev_pki",
    "issue_from_csr",
    "load_certificate",
    "load_public_key",
    "load_public_keys",
    "load_signing_key",
    "private_pem",
    "public_pem",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
BROKER_CERT = "broker.crt"
BROKER_KEY = "broker.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
REVOKED = "revoked.txt"
SERVER_CLIENT_NAME = SERVER_NAME


@dataclass(frozen=True, slots=True)
class Pair:
    """Paths of one certificate and its key."""

    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    mode = 0o600 if secret else 0o644
    fd = os.open(path, flags, mode)
    # os.open's mode applies only when it creates the file: an existing key
    # file must not keep looser permissions. Windows has no fchmod (before
    # Python 3.13); the agent writes its files through agent_push.platform.
    if sys.platform != "win32":
        os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """The PKCS#8 PEM of a signing key, as ``signing.key`` holds it."""
    return _key_pem(key)


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} is not an EC private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM certificate, as a PKIError when it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read certificate {path}: {exc}") from exc


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the server's Ed25519 command-signing key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PKIError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read the server's Ed25519 public key, as pinned by agents and brokers."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise PKIError(f"{path} is not an Ed25519 public key")
    return key


# Certificates start this far in the past, for clocks a little behind ours;
# at most a tenth of the lifetime, so that a lifetime of seconds (tests) is
# not mostly spent before it was issued.
BACKDATE = 300.0


_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.DOTALL)


def load_public_keys(path: Path) -> tuple[Ed25519PublicKey, ...]:
    """Every Ed25519 public key of a PEM file, in order. During a key rotation
    ``signing.pub`` holds the current key first, then the others that still
    verify tokens (``epns.trust``); a file of one key is the usual case."""
    try:
        blocks = _PEM_PUBLIC.findall(path.read_bytes())
    except OSError as exc:
        raise PKIError(f"cannot read public key {path}: {exc}") from exc
    if not blocks:
        raise PKIError(f"{path} holds no PEM public key")
    keys = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise PKIError(f"cannot read public key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise PKIError(f"{path} holds a key that is not Ed25519")
        keys.append(key)
    return tuple(keys)


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The PEM of a public key, as ``signing.pub`` holds it."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class PublicKeyFile:
    """The keys of a public-key file, re-read when it changes (a key rotation
    rewrites ``signing.pub``), looked at no more than once per ``interval``
    seconds. A file that becomes unreadable keeps the last good keys."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self._interval = interval
        self._keys = load_public_keys(path)
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def keys(self) -> tuple[Ed25519PublicKey, ...]:
        """The keys, current first."""
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                with contextlib.suppress(PKIError):
                    self._keys = load_public_keys(self.path)
        return self._keys


def _builder(subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes,
             days: float, not_before: dt.datetime | None) -> x509.CertificateBuilder:
    lifetime = dt.timedelta(days=days)
    start = not_before or (
        _now() - min(dt.timedelta(seconds=BACKDATE), lifetime / 10))
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
    )


# Every fleet CA's name starts so; a CA rotation adds the day it was made.
CA_NAME = "epns fleet CA"


def create_ca(directory: Path, name: str = CA_NAME, days: float = 3650) -> Pair:
    """A self-signed fleet CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key(), days, None)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    pair = Pair(directory / CA_CERT, directory / CA_KEY)
    _write(pair.key, _key_pem(key), secret=True)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return pair


def _sign(ca: Pair, subject: x509.Name, public_key: CertificatePublicKeyTypes, *,
          server_names: tuple[str, ...] = (), client: bool, days: float,
          not_before: dt.datetime | None = None) -> x509.Certificate:
    ca_cert = load_certificate(ca.cert)
    ca_key = _load_ec_key(ca.key)
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        _builder(subject, ca_cert.subject, public_key, days, not_before)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(server_names)), False)
    return builder.sign(ca_key, hashes.SHA256())


def _issue(ca: Pair, subject: x509.Name, out: Pair, *, server_names: tuple[str, ...] = (),
           client: bool, days: float, not_before: dt.datetime | None = None) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(ca, subject, key.public_key(), server_names=server_names, client=client,
                 days=days, not_before=not_before)
    _write(out.key, _key_pem(key), secret=True)
    _write(out.cert, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return out


def _sans(names: tuple[str, ...]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def create_broker_cert(ca: Pair, directory: Path, names: tuple[str, ...], days: float = 825,
                       not_before: dt.datetime | None = None) -> Pair:
    """The broker's TLS certificate with ``names`` as SANs (DNS names or IPs)."""
    if not names:
        raise PKIError("a broker certificate needs at least one host name or address")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    out = Pair(directory / BROKER_CERT, directory / BROKER_KEY)
    return _issue(ca, subject, out, server_names=names, client=False, days=days,
                  not_before=not_before)


def create_client_cert(ca: Pair, out: Pair, name: str, *, server: bool = False,
                       days: float = 825) -> Pair:
    """A client certificate: CN = agent id (or the server's name), OU = role."""
    return _issue(ca, _client_subject(name, server=server), out, client=True, days=days)


def _client_subject(name: str, *, server: bool) -> x509.Name:
    check_name(name)
    if not server and name == SERVER_CLIENT_NAME:
        # Brokers that identify by CN alone (Mosquitto) would take it for the server.
        raise PKIError(f"{name!r} is reserved for the management server")
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SERVER_OU if server else AGENT_OU),
    ])


def agent_pair(directory: Path, agent_id: str) -> Pair:
    """Where an agent's certificate and key live in a PKI directory."""
    check_name(agent_id)
    return Pair(directory / "agents" / f"{agent_id}.crt", directory / "agents" / f"{agent_id}.key")


def create_signing_key(directory: Path) -> tuple[Path, Path]:
    """The server's Ed25519 key for commands and tokens, and its public half."""
    key = Ed25519PrivateKey.generate()
    private, public = directory / SIGNING_KEY, directory / SIGNING_PUB
    _write(private, _key_pem(key), secret=True)
    _write(public, public_pem(key.public_key()), secret=False)
    return private, public


def init_dev_pki(directory: Path, names: tuple[str, ...]) -> Pair:
    """Create the whole dev PKI in ``directory`` unless a CA is already there.

    Returns the CA pair. Existing files are never overwritten: agents enrolled
    against this CA keep working across restarts.
    """
    ca = Pair(directory / CA_CERT, directory / CA_KEY)
    if not ca.cert.exists():
        create_ca(directory)
    if not (directory / BROKER_CERT).exists():
        create_broker_cert(ca, directory, names)
    if not (directory / SERVER_CERT).exists():
        create_client_cert(ca, Pair(directory / SERVER_CERT, directory / SERVER_KEY),
                           SERVER_CLIENT_NAME, server=True)
    if not (directory / SIGNING_KEY).exists():
        create_signing_key(directory)
    revoked = directory / REVOKED
    if not revoked.exists():
        _write(revoked, b"# one entry per line: agent:ID, serial:HEX or token:ID\n", secret=False)
    return ca


# RSA is accepted for installers that cannot make anything else; past 8192 bits
# each handshake would cost the broker more than a fleet can afford.
RSA_BITS = (2048, 8192)
MAX_CSR_BYTES = 16 * 1024


def create_agent_csr(agent_id: str) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key and a CSR for ``agent_id``: (key PEM, CSR PEM).
    The key never leaves the machine that calls this."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(_client_subject(agent_id, server=False))
           .sign(key, hashes.SHA256()))
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def issue_from_csr(ca: Pair, csr_pem: bytes, agent_id: str, *, lifetime: float = 825 * 86400.0
                   ) -> x509.Certificate:
    """An agent client certificate for the key in ``csr_pem``, valid for
    ``lifetime`` seconds.

    Only the CSR's public key is used, once its signature proves possession of
    the private key: CN is ``agent_id`` (chosen by the server) and OU the agent
    role whatever the CSR's subject or extensions ask for. P-256, Ed25519 and
    RSA 2048-8192 keys are accepted; anything else is a PKIError."""
    subject = _client_subject(agent_id, server=False)
    return _sign(ca, subject, csr_public_key(csr_pem), client=True, days=lifetime / 86400.0)


def csr_public_key(csr_pem: bytes) -> CertificatePublicKeyTypes:
    """The public key of ``csr_pem``, once the CSR's signature proves its
    holder has the private key; PKIError for a CSR ``issue_from_csr`` refuses."""
    return _csr_key(_load_csr(csr_pem))


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    if len(csr_pem) > MAX_CSR_BYTES:
        raise PKIError(f"the CSR is over {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise PKIError(f"not a PEM certificate signing request: {exc}") from exc
    if not valid:
        raise PKIError("the CSR's signature does not verify: it does not prove the key")
    return csr


def _csr_key(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    try:
        key = csr.public_key()
    except (ValueError, TypeError) as exc:
        raise PKIError(f"the CSR's public key cannot be read: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise PKIError(f"EC key on {key.curve.name}: only P-256 (secp256r1) is accepted")
    elif isinstance(key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            raise PKIError(f"RSA key of {key.key_size} bits: {RSA_BITS[0]}-{RSA_BITS[1]} "
                           "are accepted (P-256 is better)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise PKIError(f"{type(key).__name__} keys are not accepted: use P-256 or Ed25519")
    return key
