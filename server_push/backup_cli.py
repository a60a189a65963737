"""``epns-server backup`` and ``epns-server restore`` (docs/backup.md).

    epns-server backup --out FILE [--passphrase-file F]
    epns-server restore FILE --into DIR [--force] [--passphrase-file F]

The passphrase comes from ``--passphrase-file``, else ``EPNS_BACKUP_PASSPHRASE``,
else a prompt on a terminal; never from the command line, which every user
of the machine can read in the process list.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from epns.errors import BackupError
from epns.server_config import ServerSettings
from server_push import backup

PASSPHRASE_VARIABLE = "EPNS_BACKUP_PASSPHRASE"  # noqa: S105 - its name, not a value


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def passphrase(file: Path | None, *, confirm: bool) -> str:
    """The passphrase, from the file, the environment or a prompt."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupError(f"cannot read the passphrase file {file}: {exc}") from exc
        return text.rstrip("\r\n")
    if os.environ.get(PASSPHRASE_VARIABLE):
        return os.environ[PASSPHRASE_VARIABLE]
    if not sys.stdin.isatty():
        raise BackupError(f"no passphrase: give --passphrase-file or set {PASSPHRASE_VARIABLE}")
    first = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise BackupError("the two passphrases differ")
    return first


def _cmd_backup(settings: ServerSettings, args: argparse.Namespace) -> None:
    made = backup.make(settings, args.config, passphrase(args.passphrase_file, confirm=True),
                       args.out)
    _say(f"backup in {args.out} ({made.size} bytes, {made.files} files, encrypted; 0600)")
    if made.database == "sqlite":
        _say(f"  database: SQLite, schema revision {made.schema_revision}")
    else:
        _say("  database: PostgreSQL, NOT in this backup: back it up with pg_dump "
             "(docs/backup.md); the PKI, secrets and settings are")


def _cmd_restore(_settings: ServerSettings, args: argparse.Namespace) -> None:
    opened = backup.read(args.file, passphrase(args.passphrase_file, confirm=False))
    done = backup.restore(opened, args.into, force=args.force)
    manifest = opened.manifest
    when = dt.datetime.fromtimestamp(manifest.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    _say(f"restored into {args.into}: a backup of {when} UTC by epns {manifest.version}, "
         f"{len(manifest.files)} files")
    if done.migrated_from is not None:
        _say(f"  database migrated from schema revision {done.migrated_from} "
             f"to {done.migrated_to}")
    elif manifest.database != "sqlite":
        _say("  the database is PostgreSQL: restore it with pg_restore (docs/backup.md)")
    _say(f"  start it: cd {args.into} && epns-server --config server.toml run")


def register(sub: Any) -> None:
    """Add ``backup`` and ``restore`` to ``epns-server``'s subparsers."""
    made = sub.add_parser("backup", help="back up the database, PKI and settings into one "
                                         "encrypted file (docs/backup.md)")
    made.add_argument("--out", type=Path, required=True, help="the backup file (written 0600)")
    made.add_argument("--passphrase-file", type=Path,
                      help=f"the passphrase (else {PASSPHRASE_VARIABLE}, else a prompt)")
    made.set_defaults(run=_cmd_backup)
    back = sub.add_parser("restore", help="restore a backup into a fresh state directory")
    back.add_argument("file", type=Path)
    back.add_argument("--into", type=Path, required=True, help="the directory to restore into")
    back.add_argument("--force", action="store_true",
                      help="restore into a directory that is not empty, replacing what the "
                           "backup holds there")
    back.add_argument("--passphrase-file", type=Path,
                      help=f"the passphrase (else {PASSPHRASE_VARIABLE}, else a prompt)")
    back.set_defaults(run=_cmd_restore)
