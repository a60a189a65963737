"""The backup archive's format, without I/O: a round trip, and every way a
file that is not what was sealed is refused before anything is trusted."""

from __future__ import annotations

import pytest

from epns.backup_archive import HEADER_BYTES, MAGIC, MIN_PASSPHRASE, open_sealed, seal
from epns.errors import BackupError

# A low scrypt cost keeps the unit tests quick; the header carries it.
CHEAP = 12
FILES = {"pki/ca.key": (b"-----BEGIN PRIVATE KEY-----\nsecret\n", 0o600),
         "database/server.db": (bytes(range(256)) * 64, 0o600)}


def _sealed(passphrase: str = "a long passphrase") -> bytes:
    return seal(FILES, version="9.9", schema_revision="0006", database="sqlite",
                created_at=1_700_000_000.0, passphrase=passphrase, log2_n=CHEAP)


def test_round_trip_keeps_files_modes_and_manifest() -> None:
    opened = open_sealed(_sealed(), "a long passphrase")
    assert dict(opened.files) == {name: data for name, (data, _) in FILES.items()}
    assert {e.name: e.mode for e in opened.manifest.files} == {n: m for n, (_, m) in FILES.items()}
    assert (opened.manifest.version, opened.manifest.schema_revision) == ("9.9", "0006")


def test_the_clear_text_is_not_in_the_file() -> None:
    assert b"secret" not in _sealed()


def test_two_backups_of_the_same_files_differ() -> None:
    assert _sealed() != _sealed()


@pytest.mark.parametrize("where", ["magic", "cost", "salt", "nonce", "body", "tag"])
def test_any_changed_byte_is_refused(where: str) -> None:
    blob = bytearray(_sealed())
    index = {"magic": 0, "cost": len(MAGIC) + 1, "salt": len(MAGIC) + 4,
             "nonce": HEADER_BYTES - 1, "body": HEADER_BYTES + 5, "tag": len(blob) - 1}[where]
    blob[index] ^= 0x01
    with pytest.raises(BackupError, match=r"not an epns backup|does not authenticate"):
        open_sealed(bytes(blob), "a long passphrase")


def test_a_wrong_passphrase_is_refused() -> None:
    with pytest.raises(BackupError, match="wrong passphrase"):
        open_sealed(_sealed(), "another passphrase")


def test_a_cost_beyond_the_limit_is_refused_before_any_work() -> None:
    blob = bytearray(_sealed())
    blob[len(MAGIC)] = 40
    with pytest.raises(BackupError, match="scrypt cost"):
        open_sealed(bytes(blob), "a long passphrase")


def test_a_short_passphrase_is_refused() -> None:
    with pytest.raises(BackupError, match=f"at least {MIN_PASSPHRASE}"):
        _sealed("short")


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "pki/../../x", "manifest.json",
                                  "pki//ca.key"])
def test_names_outside_the_restore_directory_are_refused(name: str) -> None:
    with pytest.raises(BackupError, match="cannot be restored"):
        seal({name: (b"x", 0o600)}, version="1", schema_revision=None, database="postgresql",
             created_at=0.0, passphrase="a long passphrase", log2_n=CHEAP)
