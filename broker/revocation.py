"""The revocation file, re-read when it changes."""

from __future__ import annotations

import logging
from pathlib import Path

from epns.errors import ConfigError
from epns.logs import event
from epns.revocation import RevocationList, parse_revocations

log = logging.getLogger(__name__)


class RevocationFile:
    """Holds the current revocation list of one file; ``refresh`` re-reads it
    when its modification time or size changed. A file that becomes unreadable
    or invalid keeps the last good list, and says so."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.current = RevocationList()
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            self.current = self._read(path)
            self._stamp = self._stat(path)

    @staticmethod
    def _stat(path: Path) -> tuple[int, int] | None:
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size)

    @staticmethod
    def _read(path: Path) -> RevocationList:
        try:
            return parse_revocations(path.read_text(encoding="utf-8"), str(path))
        except FileNotFoundError:
            return RevocationList()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read revocation file {path}: {exc}") from exc

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the list changed."""
        if self.path is None:
            return False
        stamp = self._stat(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            fresh = self._read(self.path)
        except ConfigError as exc:
            event(log, "revocations_unreadable", logging.ERROR, error=str(exc))
            return False
        changed = fresh != self.current
        self.current = fresh
        if changed:
            event(log, "revocations_loaded", path=self.path, agents=len(fresh.agents),
                  serials=len(fresh.serials), tokens=len(fresh.tokens))
        return changed
