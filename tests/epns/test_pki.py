"""epns.pki: the development PKI (files only, no network)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from epns import pki
from epns.errors import PKIError, TopicError
from epns.identity import AGENT_OU, SERVER_OU, Role, identity_from_certificate

NAMES = ("broker.example", "localhost", "127.0.0.1", "::1")
DEV_FILES = (
    pki.CA_CERT, pki.CA_KEY, pki.BROKER_CERT, pki.BROKER_KEY, pki.SERVER_CERT, pki.SERVER_KEY,
    pki.SIGNING_KEY, pki.SIGNING_PUB, pki.REVOKED,
)
KEY_FILES = (pki.CA_KEY, pki.BROKER_KEY, pki.SERVER_KEY, pki.SIGNING_KEY)


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dev-pki")
    pki.init_dev_pki(directory, NAMES)
    return directory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _is_p256(cert: x509.Certificate) -> bool:
    key = cert.public_key()
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def test_init_creates_every_file(dev_pki: Path) -> None:
    for name in DEV_FILES:
        assert (dev_pki / name).is_file(), name
        assert (dev_pki / name).stat().st_size > 0, name
    assert (dev_pki / pki.REVOKED).read_text().startswith("#")


@pytest.mark.parametrize("name", KEY_FILES)
def test_key_files_are_owner_only(dev_pki: Path, name: str) -> None:
    assert _mode(dev_pki / name) == 0o600


@pytest.mark.parametrize("name", [pki.CA_CERT, pki.BROKER_CERT, pki.SERVER_CERT])
def test_certificates_are_ecdsa_p256_signed_by_the_ca(dev_pki: Path, name: str) -> None:
    ca = pki.load_certificate(dev_pki / pki.CA_CERT)
    cert = pki.load_certificate(dev_pki / name)
    assert _is_p256(cert)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


def test_ca_is_a_ca(dev_pki: Path) -> None:
    ca = pki.load_certificate(dev_pki / pki.CA_CERT)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert ca.subject == ca.issuer


def test_broker_cert_has_the_sans(dev_pki: Path) -> None:
    cert = pki.load_certificate(dev_pki / pki.BROKER_CERT)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "broker.example"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_server_client_cert(dev_pki: Path) -> None:
    cert = pki.load_certificate(dev_pki / pki.SERVER_CERT)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "epns-server"
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [ou.value for ou in ous] == [SERVER_OU]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_signing_key_pair_matches(dev_pki: Path) -> None:
    private = pki.load_signing_key(dev_pki / pki.SIGNING_KEY)
    public = pki.load_public_key(dev_pki / pki.SIGNING_PUB)
    assert isinstance(private, Ed25519PrivateKey)
    public.verify(private.sign(b"hello"), b"hello")


def test_init_is_idempotent(tmp_path: Path) -> None:
    pki.init_dev_pki(tmp_path, ("localhost",))
    before = {name: (tmp_path / name).read_bytes() for name in DEV_FILES}
    (tmp_path / pki.REVOKED).write_text("agent:x\n")
    before[pki.REVOKED] = b"agent:x\n"
    ca = pki.init_dev_pki(tmp_path, ("other-name",))
    after = {name: (tmp_path / name).read_bytes() for name in DEV_FILES}
    assert after == before
    assert ca == pki.Pair(tmp_path / pki.CA_CERT, tmp_path / pki.CA_KEY)


def test_init_fills_in_missing_files_only(tmp_path: Path) -> None:
    pki.init_dev_pki(tmp_path, ("localhost",))
    ca_before = (tmp_path / pki.CA_CERT).read_bytes()
    (tmp_path / pki.BROKER_CERT).unlink()
    pki.init_dev_pki(tmp_path, ("new-host",))
    assert (tmp_path / pki.CA_CERT).read_bytes() == ca_before
    cert = pki.load_certificate(tmp_path / pki.BROKER_CERT)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["new-host"]
    cert.verify_directly_issued_by(pki.load_certificate(tmp_path / pki.CA_CERT))


def test_agent_cert(dev_pki: Path, tmp_path: Path) -> None:
    ca = pki.Pair(dev_pki / pki.CA_CERT, dev_pki / pki.CA_KEY)
    pair = pki.agent_pair(tmp_path, "agent-1")
    assert pair == pki.Pair(tmp_path / "agents/agent-1.crt", tmp_path / "agents/agent-1.key")
    assert pki.create_client_cert(ca, pair, "agent-1") == pair
    cert = pki.load_certificate(pair.cert)
    assert _is_p256(cert)
    assert _mode(pair.key) == 0o600
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [ou.value for ou in ous] == [AGENT_OU]
    cert.verify_directly_issued_by(pki.load_certificate(ca.cert))
    identity = identity_from_certificate(cert.public_bytes(Encoding.DER))
    assert (identity.name, identity.role) == ("agent-1", Role.AGENT)


def test_agent_cert_may_not_use_the_server_name(dev_pki: Path, tmp_path: Path) -> None:
    ca = pki.Pair(dev_pki / pki.CA_CERT, dev_pki / pki.CA_KEY)
    out = pki.Pair(tmp_path / "x.crt", tmp_path / "x.key")
    with pytest.raises(PKIError, match="'epns-server' is reserved"):
        pki.create_client_cert(ca, out, pki.SERVER_CLIENT_NAME)
    assert not out.cert.exists()
    assert not out.key.exists()


@pytest.mark.parametrize("name", ["a/b", "+", "#", "", "$SYS"])
def test_client_cert_refuses_bad_names(dev_pki: Path, tmp_path: Path, name: str) -> None:
    ca = pki.Pair(dev_pki / pki.CA_CERT, dev_pki / pki.CA_KEY)
    with pytest.raises(TopicError):
        pki.create_client_cert(ca, pki.Pair(tmp_path / "x.crt", tmp_path / "x.key"), name)
    with pytest.raises(TopicError):
        pki.agent_pair(tmp_path, name)


def test_broker_cert_needs_a_name(dev_pki: Path, tmp_path: Path) -> None:
    ca = pki.Pair(dev_pki / pki.CA_CERT, dev_pki / pki.CA_KEY)
    with pytest.raises(PKIError, match="at least one host name"):
        pki.create_broker_cert(ca, tmp_path, ())


def test_loaders_raise_pki_errors(dev_pki: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem")
    for loader in (pki.load_certificate, pki.load_signing_key, pki.load_public_key):
        with pytest.raises(PKIError, match="cannot read"):
            loader(missing)
        with pytest.raises(PKIError, match="cannot read"):
            loader(garbage)
    # the wrong kind of key
    with pytest.raises(PKIError, match="is not an Ed25519 private key"):
        pki.load_signing_key(dev_pki / pki.CA_KEY)


def test_issuing_with_a_non_ec_ca_key(dev_pki: Path, tmp_path: Path) -> None:
    ca = pki.Pair(dev_pki / pki.CA_CERT, dev_pki / pki.SIGNING_KEY)
    with pytest.raises(PKIError, match="is not an EC private key"):
        pki.create_client_cert(ca, pki.Pair(tmp_path / "a.crt", tmp_path / "a.key"), "agent-1")


def test_rewritten_key_file_is_owner_only(tmp_path: Path) -> None:
    private = tmp_path / pki.SIGNING_KEY
    private.write_text("old")
    private.chmod(0o644)
    pki.create_signing_key(tmp_path)
    assert pki.load_signing_key(private)
    assert _mode(private) == 0o600
