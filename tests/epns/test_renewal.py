"""The renewal's pure logic: due time, retry delays, and the validity read
from a certificate's DER bytes or a token's claims."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from epns import pki, renewal, tokens
from epns.errors import PKIError
from epns.renewal import Lifetime


def test_due_at_two_thirds_plus_a_spread_of_a_twelfth() -> None:
    life = Lifetime(1000.0, 1000.0 + 600.0)
    assert life.due_at(0.0) == pytest.approx(1400.0)
    assert life.due_at(1.0) == pytest.approx(1400.0 + 50.0)
    assert life.due_at(0.5) == pytest.approx(1425.0)
    # A draw outside 0..1 (a caller's mistake) stays inside the window.
    assert life.due_at(-3.0) == pytest.approx(1400.0)
    assert life.due_at(7.0) == pytest.approx(1450.0)
    assert life.left(1500.0) == pytest.approx(100.0)


def test_retry_delay_grows_with_full_jitter_and_a_cap() -> None:
    far = 1e9
    ceilings = [renewal.retry_delay(n, base=10.0, cap=300.0, draw=1.0, left=far)
                for n in range(1, 8)]
    assert ceilings == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert renewal.retry_delay(3, base=10.0, cap=300.0, draw=0.5, left=far) == 20.0
    # A draw of 0 still waits MIN_RETRY: a refusal is never retried in a loop.
    assert renewal.retry_delay(1, base=10.0, cap=300.0, draw=0.0, left=far) == renewal.MIN_RETRY


def test_retry_delay_never_waits_past_half_of_what_is_left() -> None:
    assert renewal.retry_delay(6, base=10.0, cap=3600.0, draw=1.0, left=100.0) == 50.0
    assert renewal.retry_delay(6, base=10.0, cap=3600.0, draw=1.0, left=1.0) == renewal.MIN_RETRY


def test_an_expired_identity_is_retried_with_the_plain_backoff() -> None:
    """The server refuses an expired identity: a fleet of them retrying
    every MIN_RETRY seconds would be a flood that renews nothing."""
    for left in (0.0, -5.0, -86400.0):
        assert renewal.retry_delay(6, base=10.0, cap=3600.0, draw=1.0, left=left) == 320.0
        assert renewal.retry_delay(9, base=10.0, cap=3600.0, draw=1.0, left=left) == 2560.0
        assert renewal.retry_delay(1, base=10.0, cap=3600.0, draw=0.0,
                                   left=left) == renewal.MIN_RETRY


@pytest.mark.parametrize("lifetime", [7.0, 86400.0, 825 * 86400.0, 60 * 365 * 86400.0])
def test_certificate_lifetime_matches_cryptography(tmp_path: Path, lifetime: float) -> None:
    """The hand-written DER reader agrees with cryptography's, for UTCTime
    and (past 2049) GeneralizedTime."""
    ca = pki.create_ca(tmp_path)
    _, csr = pki.create_agent_csr("a1")
    cert = pki.issue_from_csr(ca, csr, "a1", lifetime=lifetime)
    der = cert.public_bytes(serialization.Encoding.DER)
    life = renewal.certificate_lifetime(der)
    assert life.not_before == cert.not_valid_before_utc.timestamp()
    assert life.not_after == cert.not_valid_after_utc.timestamp()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert renewal.certificate_lifetime(renewal.pem_der(b"junk\n" + pem)) == life


def test_a_short_lifetime_is_not_swallowed_by_the_backdating(tmp_path: Path) -> None:
    """Certificates start a little in the past for clock skew; for a lifetime
    of seconds that margin must not make renewal due at once."""
    ca = pki.create_ca(tmp_path)
    _, csr = pki.create_agent_csr("a1")
    before = dt.datetime.now(dt.UTC).timestamp()
    cert = pki.issue_from_csr(ca, csr, "a1", lifetime=9.0)
    life = renewal.certificate_lifetime(cert.public_bytes(serialization.Encoding.DER))
    assert life.due_at(0.0) > before


def test_certificate_lifetime_refuses_what_is_not_one() -> None:
    for junk in (b"", b"\x30\x03\x02\x01\x01", b"\x04\x00", b"\x30\x84\xff\xff\xff\xff"):
        with pytest.raises(PKIError):
            renewal.certificate_lifetime(junk)
    with pytest.raises(PKIError, match="no PEM certificate"):
        renewal.pem_der(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_token_lifetime_reads_iat_and_exp() -> None:
    key = tokens.PrivateKey.generate()
    token = tokens.sign_token(key, "a1", now=1_000_000.0, ttl=30.0)
    assert renewal.token_lifetime(token + "\n") == Lifetime(1_000_000.0, 1_000_030.0)
    for junk in ("", "v1.x", "v1.bm90IGpzb24.sig", "v1." + tokens.b64encode(b'{"iat":1}') + ".s"):
        with pytest.raises(PKIError, match="claims"):
            renewal.token_lifetime(junk)

