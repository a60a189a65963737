"""epns.pki: agent certificates issued from a CSR (enrolment)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from epns import pki
from epns.errors import PKIError, TopicError
from epns.identity import AGENT_OU, Role, identity_from_certificate


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.Pair:
    return pki.create_ca(tmp_path_factory.mktemp("csr-ca"))


def _csr(key: CertificateIssuerPrivateKeyTypes, cn: str = "anything",
         ou: str = "epns-server", hash_alg: hashes.HashAlgorithm | None = None) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hash_alg))
    return csr.public_bytes(serialization.Encoding.PEM)


def test_the_agent_csr_gives_a_certificate_for_the_servers_chosen_id(ca: pki.Pair) -> None:
    key_pem, csr_pem = pki.create_agent_csr("laptop-1")
    cert = pki.issue_from_csr(ca, csr_pem, "laptop-1", lifetime=30 * 86400.0)
    identity = identity_from_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert (identity.name, identity.role) == ("laptop-1", Role.AGENT)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    ca_cert = pki.load_certificate(ca.cert)
    cert.verify_directly_issued_by(ca_cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_the_csrs_subject_and_extensions_are_ignored(ca: pki.Pair) -> None:
    # The CSR asks to be the server, and a CA: it gets an agent leaf named by the server.
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), cn="epns-server", hash_alg=hashes.SHA256())
    cert = pki.issue_from_csr(ca, csr, "pc-7")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pc-7"
    assert cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == AGENT_OU
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


@pytest.mark.parametrize("make", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    Ed25519PrivateKey.generate,
    lambda: rsa.generate_private_key(65537, 2048),
], ids=["p256", "ed25519", "rsa2048"])
def test_accepted_key_types(ca: pki.Pair, make: object) -> None:
    key = make()  # type: ignore[operator]
    alg = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    cert = pki.issue_from_csr(ca, _csr(key, hash_alg=alg), "a1")
    assert cert.public_key() == key.public_key()


@pytest.mark.parametrize(("make", "words"), [
    (lambda: rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "only P-256"),
], ids=["rsa1024", "p384"])
def test_refused_key_types(ca: pki.Pair, make: object, words: str) -> None:
    with pytest.raises(PKIError, match=words):
        pki.issue_from_csr(ca, _csr(make(), hash_alg=hashes.SHA256()), "a1")  # type: ignore[operator]


def test_a_csr_whose_signature_does_not_verify_is_refused(ca: pki.Pair) -> None:
    pem = _csr(ec.generate_private_key(ec.SECP256R1()), hash_alg=hashes.SHA256())
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PKIError, match="does not verify"):
        pki.issue_from_csr(ca, forged, "a1")


@pytest.mark.parametrize("data", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                  b"-----END CERTIFICATE REQUEST-----\n", b"x" * 20000])
def test_garbage_is_a_pki_error(ca: pki.Pair, data: bytes) -> None:
    with pytest.raises(PKIError):
        pki.issue_from_csr(ca, data, "a1")


def test_the_id_must_be_a_valid_agent_name(ca: pki.Pair) -> None:
    _, csr = pki.create_agent_csr("ok")
    with pytest.raises(TopicError):
        pki.issue_from_csr(ca, csr, "no/slashes")
    with pytest.raises(PKIError, match="reserved"):
        pki.issue_from_csr(ca, csr, pki.SERVER_CLIENT_NAME)
