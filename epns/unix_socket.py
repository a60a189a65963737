"""A Unix socket whose file mode is the trust: what connects is a front the
operator let in (the embedded broker, nginx in the group), and it is believed
about the client's certificate and address (``epns.front``)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from epns.errors import ConfigError

__all__ = ["bind_trusted_socket"]

MODE = 0o660


def bind_trusted_socket(path: Path, what: str) -> socket.socket:
    """A listening-ready Unix socket at ``path``, mode 0660 from the start. A
    socket file left by a process that died is replaced; a live one or any
    other file is a ``ConfigError`` naming ``what``."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"{what} {path} exists and is not a socket; move it")
        if _answers(path):
            raise ConfigError(f"another process serves {what} {path}: give this one its "
                              "own state directory")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The umask first: the socket is never connectable by others, not
        # even between bind and chmod.
        old = os.umask(0o117)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, MODE)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot open {what} {path}: {exc.strerror or exc} (a shorter or "
                          "writable state directory, or turn it off)") from exc
    return sock


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
