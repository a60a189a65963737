"""The revocation file the broker watches (``identity.revocation_file``),
written by the server when an admin revokes an agent and read by the sync
endpoints. The broker re-reads it within seconds and closes the revoked
agent's connection; its next connect is refused.

With an external broker the same entries must reach that broker's own
mechanism (docker/ has the configs); the server's refusal at the sync
endpoints holds either way.
"""

from __future__ import annotations

import os
from pathlib import Path

from epns.errors import ConfigError
from epns.revocation import RevocationList, parse_revocations


class RevocationStore:
    """Appends entries to the file and keeps a parsed copy, re-read when the
    file changes (another replica or ``epns-certs revoke`` may write it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._current = RevocationList()

    def current(self) -> RevocationList:
        """The list as the file says now."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return RevocationList()
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read the revocation file {self.path}: {exc}") from exc
            self._current = parse_revocations(text, str(self.path))
            self._stamp = stamp
        return self._current

    def add(self, entry: str) -> None:
        """Append ``entry`` (``agent:ID``, ``serial:HEX`` or ``token:ID``) durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(entry + "\n")
            handle.flush()
            os.fsync(handle.fileno())
