"""epns.tls: context settings only; nothing connects."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from epns import pki
from epns.errors import ConfigError
from epns.tls import client_context, server_context


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls-pki")
    pki.init_dev_pki(directory, ("localhost",))
    pki.create_client_cert(
        pki.Pair(directory / pki.CA_CERT, directory / pki.CA_KEY),
        pki.agent_pair(directory, "agent-1"),
        "agent-1",
    )
    return directory


def _hardened(context: ssl.SSLContext) -> None:
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["aead"], cipher["name"]
        assert cipher["kea"] == "kx-ecdhe", cipher["name"]


def test_server_context_with_client_ca(dev_pki: Path) -> None:
    context = server_context(
        dev_pki / pki.BROKER_CERT, dev_pki / pki.BROKER_KEY, dev_pki / pki.CA_CERT
    )
    _hardened(context)
    assert context.verify_mode is ssl.CERT_OPTIONAL
    assert context.cert_store_stats()["x509_ca"] == 1


def test_server_context_without_client_ca(dev_pki: Path) -> None:
    context = server_context(dev_pki / pki.BROKER_CERT, dev_pki / pki.BROKER_KEY, None)
    _hardened(context)
    assert context.verify_mode is ssl.CERT_NONE
    assert context.cert_store_stats()["x509_ca"] == 0


def test_client_context_pinned_to_the_fleet_ca(dev_pki: Path) -> None:
    context = client_context(dev_pki / pki.CA_CERT)
    _hardened(context)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] == 1


def test_client_context_with_certificate(dev_pki: Path) -> None:
    pair = pki.agent_pair(dev_pki, "agent-1")
    context = client_context(dev_pki / pki.CA_CERT, pair.cert, pair.key)
    _hardened(context)
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_client_context_without_hostname_check_still_verifies(dev_pki: Path) -> None:
    context = client_context(dev_pki / pki.CA_CERT, check_hostname=False)
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_client_context_without_ca_uses_system_roots() -> None:
    context = client_context(None)
    _hardened(context)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_server_missing_cert(dev_pki: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    with pytest.raises(ConfigError, match=r"cannot load the broker certificate: .*does not exist"):
        server_context(missing, dev_pki / pki.BROKER_KEY, None)


def test_server_missing_key(dev_pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the broker certificate"):
        server_context(dev_pki / pki.BROKER_CERT, tmp_path / "missing.key", None)


def test_server_missing_ca(dev_pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot load the fleet CA: .*missing-ca.crt"):
        server_context(dev_pki / pki.BROKER_CERT, dev_pki / pki.BROKER_KEY,
                       tmp_path / "missing-ca.crt")


def test_server_key_does_not_match_cert(dev_pki: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the broker certificate from"):
        server_context(dev_pki / pki.BROKER_CERT, dev_pki / pki.SERVER_KEY, None)


def test_server_garbage_cert(dev_pki: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the broker certificate from"):
        server_context(garbage, dev_pki / pki.BROKER_KEY, None)


def test_client_missing_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot load the fleet CA: .*does not exist"):
        client_context(tmp_path / "missing-ca.crt")


def test_client_missing_cert(dev_pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the client certificate"):
        client_context(dev_pki / pki.CA_CERT, tmp_path / "missing.crt", tmp_path / "missing.key")


def test_client_cert_without_key(dev_pki: Path) -> None:
    pair = pki.agent_pair(dev_pki, "agent-1")
    with pytest.raises(ConfigError, match="cannot load the client certificate"):
        client_context(dev_pki / pki.CA_CERT, pair.cert, None)
