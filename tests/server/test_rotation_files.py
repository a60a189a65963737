"""server_push.security.rotation: the files a signing-key rotation writes, and
what a running server (TrustWatch) and a broker (PublicKeyFile) read of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509

from epns import pki, tokens
from epns.envelope import key_id
from epns.errors import BadToken, ConfigError
from epns.trust import KeyState, accept_announcement, bootstrap
from server_push.security import rotation

NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    pki.init_dev_pki(tmp_path, ("localhost",))
    return tmp_path


def _kid(path: Path) -> str:
    return key_id(pki.load_signing_key(path).public_key())


def test_begin_then_finish(certs: Path) -> None:
    old_key = pki.load_signing_key(certs / pki.SIGNING_KEY)
    old = key_id(old_key.public_key())
    agent = bootstrap(old_key.public_key())
    old_token = tokens.sign_token(old_key, "a1", now=NOW, ttl=365 * DAY)

    begun = rotation.begin(certs, overlap=30 * DAY, now=NOW)
    new = _kid(certs / rotation.NEXT_KEY)
    assert [(k.id, k.state) for k in begun.trust.keys] == [(old, KeyState.CURRENT),
                                                            (new, KeyState.NEXT)]
    # Still signing with the old key; brokers already know the new one.
    assert _kid(certs / pki.SIGNING_KEY) == old
    assert [key_id(k) for k in pki.load_public_keys(certs / pki.SIGNING_PUB)] == [old, new]
    assert begun.announcement is not None
    agent = accept_announcement(agent, begun.announcement, now=NOW)
    with pytest.raises(ConfigError, match="already under way"):
        rotation.begin(certs, overlap=0, now=NOW)

    with pytest.raises(ConfigError, match=r"the overlap runs until .* Wait, or --force"):
        rotation.finish(certs, now=NOW + DAY, command_grace=7 * DAY, token_ttl=365 * DAY)
    done = rotation.finish(certs, now=NOW + 30 * DAY, command_grace=7 * DAY,
                           token_ttl=365 * DAY)
    assert _kid(certs / pki.SIGNING_KEY) == new
    assert not (certs / rotation.NEXT_KEY).exists()
    assert oct(os.stat(certs / pki.SIGNING_KEY).st_mode & 0o777) == "0o600"
    # signing.pub: the new key first (bundles pin it), the old one for its tokens.
    assert [key_id(k) for k in pki.load_public_keys(certs / pki.SIGNING_PUB)] == [new, old]
    assert done.announcement is not None
    agent = accept_announcement(agent, done.announcement, now=NOW + 30 * DAY)
    assert [(k.id, k.state) for k in agent.keys] == [(new, KeyState.CURRENT),
                                                      (old, KeyState.RETIRING)]
    # Agents drop the old key once the last command it signed has expired.
    assert [k.id for k in agent.live(NOW + 38 * DAY).keys] == [new]
    with pytest.raises(ConfigError, match="no signing-key rotation is under way"):
        rotation.finish(certs, now=NOW + 31 * DAY, command_grace=0, token_ttl=0)

    # The running server: the new key signs, both verify tokens until the old
    # key's last token would have expired.
    watch = rotation.TrustWatch(certs)
    assert key_id(watch.signing_key.public_key()) == new
    keys = watch.token_keys(NOW + 40 * DAY)
    assert [key_id(k) for k in keys] == [new, old]
    assert tokens.verify_token(keys, old_token, now=NOW + 40 * DAY).subject == "a1"
    lines = "\n".join(rotation.describe(rotation.load(certs), NOW + 30 * DAY))
    assert f"key {old}: retiring, agents drop it at" in lines
    assert f"tokens signed by {old} verify until" in lines


def test_a_second_rotation_drops_what_has_run_out(certs: Path) -> None:
    first = _kid(certs / pki.SIGNING_KEY)
    rotation.begin(certs, overlap=0, now=NOW)
    rotation.finish(certs, now=NOW, command_grace=DAY, token_ttl=10 * DAY)
    second = _kid(certs / pki.SIGNING_KEY)
    made = rotation.begin(certs, overlap=0, now=NOW + 20 * DAY)
    assert first not in [k.id for k in made.trust.keys]
    assert made.trust.serial == 3
    assert [key_id(k) for k in pki.load_public_keys(certs / pki.SIGNING_PUB)] == [
        second, _kid(certs / rotation.NEXT_KEY)]
    # A token signed by a key no one announced verifies with none of them.
    forged = tokens.sign_token(tokens.PrivateKey.generate(), "a1", now=NOW, ttl=DAY)
    with pytest.raises(BadToken, match="does not verify"):
        tokens.verify_token(pki.load_public_keys(certs / pki.SIGNING_PUB), forged, now=NOW)


def test_the_watch_follows_the_files(certs: Path) -> None:
    watch = rotation.TrustWatch(certs)
    before = key_id(watch.signing_key.public_key())
    assert watch.rotation.announcement is None
    assert not watch.refresh()
    rotation.begin(certs, overlap=0, now=NOW)
    assert watch.refresh()
    assert watch.rotation.trust.serial == 1
    assert key_id(watch.signing_key.public_key()) == before
    rotation.finish(certs, now=NOW, command_grace=DAY, token_ttl=DAY)
    assert watch.refresh()
    assert key_id(watch.signing_key.public_key()) != before
    # A broker re-reads signing.pub when it changes.
    broker_keys = pki.PublicKeyFile(certs / pki.SIGNING_PUB, interval=0.0)
    assert len(broker_keys.keys()) == 2
    rotation.begin(certs, overlap=0, now=NOW + 2 * DAY)
    assert len(broker_keys.keys()) == 2  # the old key's tokens ran out; the next came
    assert key_id(broker_keys.keys()[1]) == _kid(certs / rotation.NEXT_KEY)


def test_ca_begin_switch_finish(certs: Path) -> None:
    old_ca = pki.load_certificate(certs / pki.CA_CERT)
    old_broker = pki.load_certificate(certs / pki.BROKER_CERT)
    with pytest.raises(ConfigError, match="no CA rotation has begun"):
        rotation.ca_switch(certs, now=NOW)
    begun = rotation.ca_begin(certs, overlap=DAY, now=NOW)
    assert [c.state for c in begun.trust.cas] == [KeyState.CURRENT, KeyState.NEXT]
    assert (certs / pki.CA_CERT).read_text().count("BEGIN CERTIFICATE") == 2
    # Still issuing from the old CA; one rotation at a time.
    assert pki.load_certificate(certs / pki.CA_CERT).subject == old_ca.subject
    with pytest.raises(ConfigError, match="a CA rotation is under way"):
        rotation.begin(certs, overlap=0, now=NOW)
    with pytest.raises(ConfigError, match="the overlap runs until"):
        rotation.ca_switch(certs, now=NOW + 60)

    switched = rotation.ca_switch(certs, now=NOW + DAY)
    new_ca = pki.load_certificate(certs / pki.CA_CERT)
    assert new_ca.subject != old_ca.subject
    assert new_ca.subject.rfc4514_string().startswith(f"CN={pki.CA_NAME} ")
    assert switched.ca_switched_at == NOW + DAY
    assert [c.state for c in switched.trust.cas] == [KeyState.CURRENT, KeyState.RETIRING]
    # The broker and the server present certificates from the new CA, for
    # the same names; new agents get certificates from it.
    broker = pki.load_certificate(certs / pki.BROKER_CERT)
    assert broker.issuer == new_ca.subject
    assert broker.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value == old_broker.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert pki.load_certificate(certs / pki.SERVER_CERT).issuer == new_ca.subject
    issued = pki.create_client_cert(pki.Pair(certs / pki.CA_CERT, certs / pki.CA_KEY),
                                    pki.agent_pair(certs, "a1"), "a1")
    assert pki.load_certificate(issued.cert).issuer == new_ca.subject
    assert not (certs / rotation.CA_NEXT).exists()

    done = rotation.ca_finish(certs, now=NOW + 2 * DAY)
    assert [c.state for c in done.trust.cas] == [KeyState.CURRENT]
    assert done.ca_switched_at is None
    assert (certs / pki.CA_CERT).read_text().count("BEGIN CERTIFICATE") == 1
    assert pki.load_certificate(certs / pki.CA_CERT).subject == new_ca.subject
    # The signing key was never touched, and the announcements chain.
    assert done.trust.serial == 3
    assert len(done.trust.keys) == 1
