"""The server's files are its own: what it makes is readable by its user only,
and the first admin password is written to a file, never to the log.

``epns-server`` runs with umask 077, so every file it makes (the SQLite
database and its WAL, the PKI, agent bundles, secrets) is 0600 and every
directory 0700. The state directory is tightened at each start, for
installations made before: 0700, or 0750 when the front socket is in it
(nginx, in the server's group, must reach the socket: docs/deploy-nginx.md);
the SQLite files in it and the secrets file 0600.

Under systemd whatever a service prints goes to the journal, which other
admins (group adm, systemd-journal) read: the first admin password goes to
``<state>/initial-admin-password`` (0600) instead, and the server prints
where it is. A password change deletes the file, which would be wrong then.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from epns.server_config import ServerSettings

UMASK = 0o077
PRIVATE_DIR = 0o700
# Group may enter to reach the front socket (0660 itself), not list or read.
FRONT_DIR = 0o750
PRIVATE_FILE = 0o600
INITIAL_PASSWORD = "initial-admin-password"  # noqa: S105 - a file name
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def restrict_new_files() -> None:
    """Files made from now on are the server user's only."""
    os.umask(UMASK)


def tighten_state(settings: ServerSettings) -> list[str]:
    """Make the state directory and the files in it private; returns the paths
    whose mode was changed (for the log)."""
    changed: list[str] = []
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    _chmod(state, FRONT_DIR if settings.front_socket is not None else PRIVATE_DIR, changed)
    files = [settings.console.secrets_file, state / INITIAL_PASSWORD]
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        files += [Path(url.database + suffix) for suffix in _SQLITE_SUFFIXES]
    for path in files:
        _chmod(path, PRIVATE_FILE, changed)
    return changed


def _chmod(path: Path, mode: int, changed: list[str]) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & ~mode:
        path.chmod(current & mode)
        changed.append(f"{path} {current:o}->{current & mode:o}")


def initial_password_file(settings: ServerSettings) -> Path:
    """Where the first admin password is written."""
    return settings.state_dir / INITIAL_PASSWORD


def write_initial_password(settings: ServerSettings, user: str, password: str) -> Path:
    """Write the first admin login to its 0600 file; returns the path."""
    path = initial_password_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# The first console login of this epns server. Log in, then change\n"
                     "# the password (console: click the user name; or 'epns-server admin\n"
                     "# password'), which deletes this file.\n"
                     f"user: {user}\npassword: {password}\n")
    return path


def forget_initial_password(settings: ServerSettings, user: str) -> bool:
    """Delete the first admin password's file when ``user``'s password
    changed (the file would be wrong); True if it was deleted."""
    path = initial_password_file(settings)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    if f"\nuser: {user}\n" not in text:
        return False
    path.unlink()
    return True
