"""The renewed identity's files: installed whole next to the old ones, and a
crash between the key's and the certificate's renames finished at start."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent_push.renewal import Renewed, current_lifetime, install, recover
from epns import pki
from epns.agent_config import IdentitySettings
from epns.renewal import Lifetime


def _identity(tmp_path: Path) -> IdentitySettings:
    ca = pki.create_ca(tmp_path / "ca")
    pair = pki.create_client_cert(ca, pki.Pair(tmp_path / "agent.crt", tmp_path / "agent.key"),
                                  "a1", days=1)
    return IdentitySettings(agent_id="a1", cert=pair.cert, key=pair.key)


def _renewed(tmp_path: Path) -> Renewed:
    ca = pki.Pair(tmp_path / "ca" / pki.CA_CERT, tmp_path / "ca" / pki.CA_KEY)
    key, csr = pki.create_agent_csr("a1")
    cert = pki.issue_from_csr(ca, csr, "a1", lifetime=3600.0)
    return Renewed(cert.public_bytes(Encoding.PEM), key, None, "x", Lifetime(0, 1))


def test_install_replaces_the_pair_and_leaves_nothing_staged(tmp_path: Path) -> None:
    identity = _identity(tmp_path)
    before = current_lifetime(identity)
    renewed = _renewed(tmp_path)
    install(identity, renewed)
    assert identity.cert is not None
    assert identity.key is not None
    assert identity.cert.read_bytes() == renewed.certificate
    assert identity.key.read_bytes() == renewed.key
    assert stat.S_IMODE(identity.key.stat().st_mode) == 0o600
    assert current_lifetime(identity).length == pytest.approx(3600, abs=1)
    assert current_lifetime(identity) != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert recover(identity) is None


def test_a_crash_before_any_rename_keeps_the_old_pair(tmp_path: Path) -> None:
    identity = _identity(tmp_path)
    assert identity.cert is not None
    assert identity.key is not None
    old = (identity.cert.read_bytes(), identity.key.read_bytes())
    renewed = _renewed(tmp_path)
    (tmp_path / ".agent.key.new").write_bytes(renewed.key or b"")
    (tmp_path / ".agent.crt.new").write_bytes((renewed.certificate or b"")[:100])  # half
    assert recover(identity) == "removed a certificate and key staged before a crash"
    assert (identity.cert.read_bytes(), identity.key.read_bytes()) == old
    assert not list(tmp_path.glob(".*.new"))


def test_a_crash_between_the_renames_is_finished(tmp_path: Path) -> None:
    identity = _identity(tmp_path)
    assert identity.cert is not None
    assert identity.key is not None
    renewed = _renewed(tmp_path)
    # The key was renamed into place; its certificate was staged, not renamed.
    identity.key.write_bytes(renewed.key or b"")
    (tmp_path / ".agent.crt.new").write_bytes(renewed.certificate or b"")
    assert recover(identity) is not None
    assert identity.cert.read_bytes() == renewed.certificate
    assert not list(tmp_path.glob(".*.new"))


def test_a_staged_token_is_dropped(tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    token.write_text("v1.old.sig\n")
    (tmp_path / ".agent.token.new").write_text("v1.half")
    identity = IdentitySettings(agent_id="a1", cert=None, key=None, token_file=token)
    assert recover(identity) == "removed a token staged before a crash"
    assert token.read_text() == "v1.old.sig\n"
    install(identity, Renewed(None, None, "v1.new.sig", "t", Lifetime(0, 1)))
    assert token.read_text() == "v1.new.sig\n"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_a_certificate_and_key_in_one_file_stay_together(tmp_path: Path) -> None:
    """identity.cert and identity.key may name one PEM holding both (OpenSSL
    reads each from it): the renewed pair must land in it whole."""
    separate = _identity(tmp_path)
    assert separate.cert is not None
    assert separate.key is not None
    both = tmp_path / "agent.pem"
    both.write_bytes(separate.cert.read_bytes() + separate.key.read_bytes())
    identity = IdentitySettings(agent_id="a1", cert=both, key=both)
    renewed = _renewed(tmp_path)
    install(identity, renewed)
    assert renewed.certificate is not None
    assert renewed.certificate in both.read_bytes()
    assert stat.S_IMODE(both.stat().st_mode) == 0o600
    ssl.create_default_context().load_cert_chain(both, both)  # the key matches
    assert current_lifetime(identity).length == pytest.approx(3600, abs=1)
    assert not list(tmp_path.glob(".*.new"))
