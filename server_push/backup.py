"""``epns-server backup`` and ``restore``: the server's state in one encrypted
file, and back into a fresh directory a server starts from (docs/backup.md).

What a backup holds: the SQLite database, copied with SQLite's online backup
while the server runs (a consistent snapshot, never a half-written page);
every file of the PKI directory (the fleet CA and its key, the broker and
server certificates, the command-signing key and its public half, the
revocation list, the rotation state and a CA rotation's ``ca-next/``); the
console's secrets file; the server's config file and the embedded broker's,
when there are. A PostgreSQL database is not copied: ``pg_dump`` is its
backup (it knows the server's version and its locks); the files are.

A restore lays the state out as the all-in-one does, relative to the
directory it writes, so a server run from there finds it::

    DIR/server.toml         the backed-up settings, with the paths below
    DIR/broker.toml         the embedded broker's config, if there was one
    DIR/certs/              the PKI directory
    DIR/state/server.db     the database, migrated forward if it was older
    DIR/state/server-secrets.json

Nothing is written before the whole backup has decrypted and every digest
matched; the files go to a staging directory beside DIR and move in at the
end, so a refused or failed restore leaves DIR as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from epns import __version__
from epns.backup_archive import Backup, open_sealed, seal
from epns.errors import BackupError
from epns.server_config import ServerSettings
from server_push.store import db

PKI = "pki/"
DATABASE = "database/server.db"
SECRETS = "state/server-secrets.json"
CONFIG = "config/server.toml"
BROKER_CONFIG = "config/broker.toml"
# The settings a restore points at its own layout (a JSON table of tables).
LAYOUT = "config/layout.json"
CERTS_DIR, STATE_DIR = "certs", "state"
# Settings that name a file of the PKI directory, by default and usually.
_PKI_FILES = (("http", "cert"), ("http", "key"), ("http", "client_ca"),
              ("mqtt", "ca"), ("mqtt", "cert"), ("mqtt", "key"))


@dataclass(frozen=True)
class Made:
    """What ``backup`` wrote, for its report."""

    files: int
    size: int
    schema_revision: str | None
    database: str


def _sqlite_path(settings: ServerSettings) -> Path | None:
    """The database file, or None when the database is not SQLite."""
    url = make_url(settings.database.url)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise BackupError(f"the database {settings.database.url!r} is not a file")
    return Path(url.database)


def snapshot_sqlite(path: Path) -> tuple[bytes, str | None]:
    """A consistent copy of a live SQLite database, and its schema revision.
    SQLite's online backup copies page by page under its own locking, so the
    server goes on writing; the copy is taken into memory, never to disk in
    clear."""
    if not path.is_file():
        raise BackupError(f"no database at {path}")
    source = sqlite3.connect(path, timeout=30)
    copy = sqlite3.connect(":memory:")
    try:
        source.backup(copy)
        row = copy.execute("SELECT version_num FROM alembic_version").fetchone()
        return copy.serialize(), None if row is None else str(row[0])
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up the database {path}: {exc}") from exc
    finally:
        copy.close()
        source.close()


def _pki_files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file of the PKI directory, but the scratch files of an
    interrupted atomic write (``.NAME.tmp``)."""
    if not directory.is_dir():
        raise BackupError(f"no PKI directory at {directory}")
    found: dict[str, tuple[bytes, int]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            found[PKI + path.relative_to(directory).as_posix()] = (
                path.read_bytes(), path.stat().st_mode & 0o777)
    return found


def _inside(path: Path, directory: Path) -> str | None:
    try:
        return path.resolve().relative_to(directory.resolve()).as_posix()
    except ValueError:
        return None


def _layout(settings: ServerSettings, sqlite: bool, broker_config: bool) -> dict[str, Any]:
    """The settings a restored server needs to find its state in the
    restore's layout; a setting naming a file outside the PKI directory (a
    public HTTPS certificate, say) is left as it was, and so is its file."""
    layout: dict[str, Any] = {
        "state_dir": STATE_DIR,
        "pki": {"dir": CERTS_DIR},
        "console": {"secrets_file": f"{STATE_DIR}/server-secrets.json"},
    }
    if sqlite:
        layout["database"] = {"url": f"sqlite+aiosqlite:///{STATE_DIR}/server.db"}
    if broker_config:
        layout["broker"] = {"config": "broker.toml"}
    for section, name in _PKI_FILES:
        relative = _inside(getattr(getattr(settings, section), name), settings.pki.dir)
        if relative is not None:
            layout.setdefault(section, {})[name] = f"{CERTS_DIR}/{relative}"
    return layout


def make(settings: ServerSettings, config: Path | None, passphrase: str, out: Path) -> Made:
    """Back the server's state up into ``out`` (0600, written whole or not at all)."""
    files = _pki_files(settings.pki.dir)
    database = _sqlite_path(settings)
    revision: str | None = None
    if database is not None:
        image, revision = snapshot_sqlite(database)
        files[DATABASE] = (image, 0o600)
    if settings.console.secrets_file.is_file():
        files[SECRETS] = (settings.console.secrets_file.read_bytes(), 0o600)
    for name, path in ((CONFIG, config), (BROKER_CONFIG, settings.broker.config)):
        if path is not None:
            try:
                files[name] = (path.read_bytes(), 0o600)
            except OSError as exc:
                raise BackupError(f"cannot read {path}: {exc}") from exc
    layout = _layout(settings, database is not None, settings.broker.config is not None)
    files[LAYOUT] = (json.dumps(layout, indent=1).encode(), 0o600)
    blob = seal(files, version=__version__, schema_revision=revision,
                database="sqlite" if database is not None else "postgresql",
                created_at=time.time(), passphrase=passphrase)
    _write_private(out, blob)
    return Made(len(files), len(blob), revision,
                "sqlite" if database is not None else "postgresql")


def _write_private(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except OSError as exc:
        scratch.unlink(missing_ok=True)
        raise BackupError(f"cannot write {path}: {exc}") from exc


def read(path: Path, passphrase: str) -> Backup:
    """Open and check the backup in ``path``."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc}") from exc
    return open_sealed(blob, passphrase)


def check_revision(revision: str | None, made_by: str) -> bool:
    """Whether the backup's schema needs migrating forward (False: it is
    current); BackupError when this code does not know it (a newer backup)."""
    known = db.schema_revisions()
    if revision is None:
        raise BackupError("the backup's database has no schema revision (no alembic_version)")
    if revision not in known:
        raise BackupError(
            f"the backup's database is at schema revision {revision} (made by epns {made_by}); "
            f"this epns ({__version__}) knows revisions up to {known[-1]}: restore it with "
            f"the version that made it, or a newer one")
    return revision != known[-1]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string.
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise BackupError(f"the backed-up server.toml holds a value this restore cannot "
                      f"write back: {value!r}")


def _toml(table: Mapping[str, Any], prefix: str = "") -> str:
    """TOML for the server's settings: a table's values, then its subtables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for name, value in table.items():
        if isinstance(value, dict):
            lines += ["", f"[{prefix}{name}]", _toml(value, f"{prefix}{name}.").rstrip("\n")]
    return "\n".join(lines) + "\n"


def _settings_file(backup: Backup) -> bytes:
    """The restored ``server.toml``: the backed-up one (comments are lost)
    with the layout's paths."""
    table: dict[str, Any] = {}
    if CONFIG in backup.files:
        try:
            table = tomllib.loads(backup.files[CONFIG].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise BackupError(f"the backed-up server.toml is unreadable: {exc}") from exc
    for key, value in json.loads(backup.files[LAYOUT]).items():
        if isinstance(value, dict):
            section = table.setdefault(key, {})
            if not isinstance(section, dict):
                raise BackupError(f"the backed-up server.toml has {key} as a value, not a table")
            section.update(value)
        else:
            table[key] = value
    return ("# Restored by epns-server restore; the paths are relative to this file.\n"
            + _toml(table)).encode()


def _targets(backup: Backup) -> dict[str, tuple[str, int]]:
    """Archive name -> (path under the restore directory, mode)."""
    entries = {entry.name: entry.mode for entry in backup.manifest.files}
    targets: dict[str, tuple[str, int]] = {}
    for name, mode in entries.items():
        if name.startswith(PKI):
            # A key stays the owner's alone, whatever mode it had.
            safe = 0o600 if name.endswith(".key") else (mode & 0o644)
            targets[name] = (f"{CERTS_DIR}/{name[len(PKI):]}", safe)
        elif name == DATABASE:
            targets[name] = (f"{STATE_DIR}/server.db", 0o600)
        elif name == SECRETS:
            targets[name] = (f"{STATE_DIR}/server-secrets.json", 0o600)
        elif name == BROKER_CONFIG:
            targets[name] = ("broker.toml", 0o600)
    return targets


async def _migrate(path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await db.migrate(engine)
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Restored:
    """What ``restore`` did, for its report."""

    backup: Backup
    migrated_from: str | None
    migrated_to: str | None


def restore(backup: Backup, into: Path, *, force: bool = False) -> Restored:
    """Write ``backup`` into ``into`` (refused when not empty, unless
    ``force``), migrating its database forward if it is older than the code."""
    manifest = backup.manifest
    if LAYOUT not in backup.files:
        raise BackupError("the backup has no layout (config/layout.json)")
    migrate = False
    if DATABASE in backup.files:
        migrate = check_revision(manifest.schema_revision, manifest.version)
    if into.exists() and not into.is_dir():
        raise BackupError(f"{into} is not a directory")
    present = sorted(p.name for p in into.iterdir()) if into.is_dir() else []
    if present and not force:
        raise BackupError(f"{into} is not empty ({', '.join(present[:5])}"
                          f"{' …' if len(present) > 5 else ''}): restore into a fresh "
                          "directory, or --force to replace what the backup holds")
    into.parent.mkdir(parents=True, exist_ok=True)
    staging = into.parent / f".{into.name}.restoring-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(mode=0o700)
        for name, (relative, mode) in _targets(backup).items():
            _place(staging / relative, backup.files[name], mode)
        _place(staging / "server.toml", _settings_file(backup), 0o600)
        if migrate:
            asyncio.run(_migrate(staging / STATE_DIR / "server.db"))
        _move_in(staging, into)
    except OSError as exc:
        raise BackupError(f"cannot restore into {into}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    head = db.schema_revisions()[-1]
    return Restored(backup, manifest.schema_revision if migrate else None,
                    head if migrate else None)


def _place(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _move_in(staging: Path, into: Path) -> None:
    """Move the staged entries in, replacing same-named ones (``--force``)."""
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in staging.iterdir():
        target = into / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)
