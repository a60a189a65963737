"""The encrypted backup archive: its format, sealing and opening, without I/O.

One file holds a manifest (product version, schema revision, time, each
file's digest) and the files themselves, as a gzipped tar, encrypted with
AES-256-GCM under a key derived from a passphrase by scrypt. The clear
header (magic, scrypt cost, salt, nonce) is the cipher's associated data, so
a changed byte anywhere fails authentication: a wrong passphrase and a
tampered file give the same answer, and nothing is trusted before it.

    magic "EPNSBKP1" | log2 N (1 byte) | r (1) | p (1) | salt (16) | nonce (12) | ciphertext

scrypt at N=2**17, r=8, p=1 (128 MiB) is the cost OWASP recommends for it:
0.9 s to seal and 1.0 s to open on the shared 2-core dev machine. The header
carries the cost so a later version may raise it and still open older
backups. A header asking for more than MAX_LOG2_N is
refused before any work, so a crafted file cannot make ``restore`` allocate
gigabytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from epns.errors import BackupError

__all__ = [
    "FORMAT",
    "MIN_PASSPHRASE",
    "Backup",
    "FileEntry",
    "Manifest",
    "open_sealed",
    "seal",
]

MAGIC = b"EPNSBKP1"
FORMAT = 1
LOG2_N, R, P = 17, 8, 1
MAX_LOG2_N = 20
SALT_BYTES, NONCE_BYTES = 16, 12
HEADER_BYTES = len(MAGIC) + 3 + SALT_BYTES + NONCE_BYTES
MANIFEST = "manifest.json"
MIN_PASSPHRASE = 8


@dataclass(frozen=True)
class FileEntry:
    """One file of a backup: its name in the archive, digest, size and mode."""

    name: str
    sha256: str
    size: int
    mode: int


@dataclass(frozen=True)
class Manifest:
    """What a backup holds and where it came from."""

    version: str
    # The Alembic revision of the database in the backup; None without one
    # (PostgreSQL: the database is backed up with pg_dump, not here).
    schema_revision: str | None
    # "sqlite" (the database is in the backup) or "postgresql" (it is not).
    database: str
    created_at: float
    files: tuple[FileEntry, ...]
    format: int = FORMAT

    def to_json(self) -> bytes:
        """The manifest as the archive stores it."""
        return json.dumps({
            "format": self.format, "version": self.version,
            "schema_revision": self.schema_revision, "database": self.database,
            "created_at": self.created_at,
            "files": [{"name": f.name, "sha256": f.sha256, "size": f.size, "mode": f.mode}
                      for f in self.files],
        }, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Read a manifest; BackupError when it is not one."""
        try:
            raw = json.loads(data)
            files = tuple(FileEntry(str(f["name"]), str(f["sha256"]), int(f["size"]),
                                    int(f["mode"])) for f in raw["files"])
            revision = raw["schema_revision"]
            return cls(str(raw["version"]), None if revision is None else str(revision),
                       str(raw["database"]), float(raw["created_at"]), files,
                       int(raw["format"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"the backup's manifest is unreadable: {exc}") from exc


@dataclass(frozen=True)
class Backup:
    """An opened backup: its manifest and its files (archive name -> bytes),
    every digest checked."""

    manifest: Manifest
    files: Mapping[str, bytes]


def _key(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2 ** log2_n, r=r, p=p).derive(
        passphrase.encode("utf-8"))


def _entry(name: str, data: bytes, mode: int) -> FileEntry:
    return FileEntry(name, hashlib.sha256(data).hexdigest(), len(data), mode)


def _check_name(name: str) -> None:
    """Archive names are relative paths without '..': a restore writes them
    under its directory and nowhere else."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or name == MANIFEST:
        raise BackupError(f"the backup names a file {name!r} that cannot be restored")


def seal(files: Mapping[str, tuple[bytes, int]], *, version: str,
         schema_revision: str | None, database: str, created_at: float,
         passphrase: str, log2_n: int = LOG2_N) -> bytes:
    """The encrypted archive of ``files`` (archive name -> (bytes, mode))."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    for name in files:
        _check_name(name)
    manifest = Manifest(version, schema_revision, database, created_at,
                        tuple(_entry(n, data, mode) for n, (data, mode) in sorted(files.items())))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [(MANIFEST, manifest.to_json()),
                           *((n, d) for n, (d, _) in sorted(files.items()))]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(created_at)
            tar.addfile(info, io.BytesIO(data))
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    header = MAGIC + bytes((log2_n, R, P)) + salt + nonce
    return header + AESGCM(_key(passphrase, salt, log2_n, R, P)).encrypt(
        nonce, buffer.getvalue(), header)


def open_sealed(blob: bytes, passphrase: str) -> Backup:
    """Decrypt and check a backup; BackupError says what is wrong with it."""
    if len(blob) < HEADER_BYTES + 16 or not blob.startswith(MAGIC):
        raise BackupError("not an epns backup (its first bytes are not an epns backup's)")
    header, ciphertext = blob[:HEADER_BYTES], blob[HEADER_BYTES:]
    log2_n, r, p = header[len(MAGIC):len(MAGIC) + 3]
    if not (10 <= log2_n <= MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16):
        raise BackupError(f"the backup asks for an scrypt cost (N=2**{log2_n}, r={r}, p={p}) "
                          "this version does not accept; the file is damaged or not ours")
    salt = header[len(MAGIC) + 3:len(MAGIC) + 3 + SALT_BYTES]
    nonce = header[-NONCE_BYTES:]
    try:
        payload = AESGCM(_key(passphrase, salt, log2_n, r, p)).decrypt(nonce, ciphertext, header)
    except InvalidTag:
        raise BackupError("cannot open the backup: wrong passphrase, or the file was changed "
                          "or damaged (it does not authenticate)") from None
    return _unpack(payload)


def _unpack(payload: bytes) -> Backup:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise BackupError(f"the backup holds {member.name!r}, not a regular file")
                files[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"the backup's archive is unreadable: {exc}") from exc
    if MANIFEST not in files:
        raise BackupError("the backup has no manifest")
    manifest = Manifest.from_json(files.pop(MANIFEST))
    if manifest.format > FORMAT:
        raise BackupError(f"the backup is of format {manifest.format}, made by epns "
                          f"{manifest.version}; this version reads format {FORMAT} and older")
    listed = {entry.name: entry for entry in manifest.files}
    if set(listed) != set(files):
        raise BackupError("the backup's files do not match its manifest: "
                          f"{sorted(set(listed) ^ set(files))}")
    for name, data in files.items():
        _check_name(name)
        if hashlib.sha256(data).hexdigest() != listed[name].sha256:
            raise BackupError(f"{name} in the backup does not match its digest")
    return Backup(manifest, files)
