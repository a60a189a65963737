"""epns.trust: announcements verified with a held key, replay, retiring keys by the clock."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from epns.envelope import (
    Command,
    CommandType,
    ReplayGuard,
    canonical,
    key_id,
    sign_command,
    verify_command,
)
from epns.errors import BadSignature, MalformedMessage, ReplayedMessage, UnknownSigner
from epns.tokens import b64encode, raw_public
from epns.trust import (
    KeyState,
    Trust,
    TrustedCA,
    TrustedKey,
    accept_announcement,
    bootstrap,
    ca_switched,
    encode_trust,
    resume,
    sign_announcement,
    stored,
)

NOW = 1_700_000_000.0


def _key(private: Ed25519PrivateKey, state: KeyState, until: float | None = None) -> TrustedKey:
    return TrustedKey(raw_public(private.public_key()), state, until)


@pytest.fixture
def old() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def new() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _begin(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> Trust:
    return Trust(1, (_key(old, KeyState.CURRENT), _key(new, KeyState.NEXT)),
                 overlap_until=NOW + 3600, issued_at=NOW)


def _finish(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> Trust:
    return Trust(2, (_key(new, KeyState.CURRENT), _key(old, KeyState.RETIRING, NOW + 600)),
                 issued_at=NOW + 3600)


def _command(key: Ed25519PrivateKey) -> bytes:
    return sign_command(Command(CommandType.WAKE, "all", NOW, NOW + 1000), key)


def _signed_anyway(trust: Trust, key: Ed25519PrivateKey) -> bytes:
    """Signed without sign_announcement's check, as a forger would."""
    body = {**encode_trust(trust), "kid": key_id(key.public_key())}
    return canonical({**body, "sig": b64encode(key.sign(canonical(body)))})


def _verify(trust: Trust, raw: bytes, now: float = NOW) -> Command:
    return verify_command(raw, trust.lookup(now), agent_id="a1", groups=frozenset(),
                          replay=ReplayGuard(), now=now)


def test_a_whole_rotation(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    held = bootstrap(old.public_key())
    with pytest.raises(UnknownSigner, match=f"signed by key {key_id(new.public_key())}"):
        _verify(held, _command(new))
    held = accept_announcement(held, sign_announcement(_begin(old, new), old), now=NOW)
    # The overlap: both keys verify.
    assert _verify(held, _command(old)).type is CommandType.WAKE
    assert _verify(held, _command(new)).type is CommandType.WAKE
    held = accept_announcement(held, sign_announcement(_finish(old, new), new), now=NOW + 3600)
    assert held.current().id == key_id(new.public_key())
    # The old key still verifies what it signed before finish, until its time is up.
    assert _verify(held, _command(old), NOW + 500).type is CommandType.WAKE
    with pytest.raises(UnknownSigner, match="which this agent does not know"):
        _verify(held, _command(old), NOW + 601)
    assert [k.state for k in held.live(NOW + 601).keys] == [KeyState.CURRENT]


def test_offline_through_the_overlap(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    held = bootstrap(old.public_key())
    with pytest.raises(UnknownSigner, match="epns-agent trust reset"):
        accept_announcement(held, sign_announcement(_finish(old, new), new), now=NOW)


def test_forged_announcement(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    held = bootstrap(old.public_key())
    wire = json.loads(sign_announcement(_begin(old, new), old))
    wire["keys"][1]["key"] = wire["keys"][0]["key"][::-1]
    with pytest.raises(BadSignature, match="does not verify"):
        accept_announcement(held, json.dumps(wire), now=NOW)
    assert held == bootstrap(old.public_key())


def test_announcement_signed_by_an_unknown_key(old: Ed25519PrivateKey,
                                               new: Ed25519PrivateKey) -> None:
    stranger = Ed25519PrivateKey.generate()
    forged = Trust(1, (_key(stranger, KeyState.CURRENT),), issued_at=NOW)
    with pytest.raises(UnknownSigner, match=f"key {key_id(stranger.public_key())}"):
        accept_announcement(bootstrap(old.public_key()), sign_announcement(forged, stranger),
                            now=NOW)


def test_signed_by_a_trusted_key_that_it_does_not_name_current(
        old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    # Signed by the old key, naming the new one current: the signer is not
    # the one the announcement says signs now.
    raw = _signed_anyway(_finish(old, new), old)
    with pytest.raises(MalformedMessage, match="not by the key it names current"):
        accept_announcement(bootstrap(old.public_key()), raw, now=NOW)


def test_replay_of_an_old_announcement(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    begin = sign_announcement(_begin(old, new), old)
    held = accept_announcement(bootstrap(old.public_key()), begin, now=NOW)
    held = accept_announcement(held, sign_announcement(_finish(old, new), new), now=NOW)
    with pytest.raises(ReplayedMessage, match="older than the one held"):
        accept_announcement(held, begin, now=NOW)
    # The same one again changes nothing.
    assert accept_announcement(held, sign_announcement(_finish(old, new), new), now=NOW) is held


def test_malformed_announcements(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    held = bootstrap(old.public_key())
    two_current = replace(_begin(old, new), keys=(_key(old, KeyState.CURRENT),
                                                  _key(new, KeyState.CURRENT)))
    raw = _signed_anyway(two_current, old)
    with pytest.raises(MalformedMessage, match="exactly one key must be current"):
        accept_announcement(held, raw, now=NOW)
    with pytest.raises(MalformedMessage, match="not JSON"):
        accept_announcement(held, b"{", now=NOW)
    with pytest.raises(ValueError, match="signed by its current key"):
        sign_announcement(_begin(old, new), new)


def test_resume_from_the_state_directory(old: Ed25519PrivateKey,
                                         new: Ed25519PrivateKey) -> None:
    held = accept_announcement(bootstrap(old.public_key()),
                               sign_announcement(_begin(old, new), old), now=NOW)
    saved = json.loads(json.dumps(stored(held, old.public_key())))
    assert resume(saved, old.public_key()) == (held, False)
    # An operator put another key in place of the pinned one: it wins.
    fresh, reset = resume(saved, new.public_key())
    assert reset
    assert fresh == bootstrap(new.public_key())
    assert resume(None, old.public_key()) == (bootstrap(old.public_key()), False)


def _ca_pem(seed: int) -> str:
    """Not a certificate: the trust rules only read its base64 body."""
    body = base64.b64encode(bytes([seed]) * 48).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def test_a_ca_switch_is_what_makes_an_agent_renew(old: Ed25519PrivateKey) -> None:
    key = (_key(old, KeyState.CURRENT),)
    first, second = _ca_pem(1), _ca_pem(2)
    held = bootstrap(old.public_key())
    begun = Trust(1, key, (TrustedCA(first, KeyState.CURRENT), TrustedCA(second, KeyState.NEXT)))
    switched = Trust(2, key, (TrustedCA(second, KeyState.CURRENT),
                              TrustedCA(first, KeyState.RETIRING)))
    finished = Trust(3, key, (TrustedCA(second, KeyState.CURRENT),))
    assert not ca_switched(held, begun)  # learning the CAs is no switch
    assert ca_switched(begun, switched)
    assert not ca_switched(switched, finished)
    assert ca_switched(held, switched)  # missed begin, came back for switch
    assert ca_switched(begun, finished)  # missed switch
    # The CAs travel in the announcement and survive the round trip.
    raw = sign_announcement(begun, old)
    assert accept_announcement(held, raw, now=NOW).cas == begun.cas
