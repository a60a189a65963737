"""A listener's TLS material, taken up again when its files change.

A CA rotation (docs/rotation.md) rewrites the fleet CA file (two CAs during
the overlap, then the new one alone) and the certificates presented; the
broker and the HTTPS server must follow without a restart, or every agent
would reconnect. OpenSSL can
add a CA to a live context but not remove one, so each change builds a fresh
context, and the listening context's server-name callback hands each new
handshake to the newest (it runs for every ClientHello, with or without SNI,
before ALPN is chosen). Connections already made keep the context they were
made with: a reload drops none. Files that cannot be read keep the last good
material, and say so.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from epns.errors import ConfigError
from epns.logs import event

log = logging.getLogger(__name__)


class TlsReload:
    """Watches ``files``; ``attach`` puts a listener's context under it.
    ``refresh`` is called on a timer (the broker), or, with ``lazy`` set, by
    the first handshake at least ``lazy`` seconds after the last look (the
    HTTPS server, whose event loop uvicorn owns)."""

    def __init__(self, files: tuple[Path, ...], *, lazy: float | None = None) -> None:
        self._files = files
        self._lazy = lazy
        self._looked = time.monotonic()
        self._stamps = self._stat()
        # Per listener: the context it listens with, and how to build one.
        self._listeners: list[tuple[ssl.SSLContext, Callable[[], ssl.SSLContext]]] = []
        self._current: dict[int, ssl.SSLContext] = {}

    def _stat(self) -> tuple[tuple[int, int] | None, ...]:
        stamps: list[tuple[int, int] | None] = []
        for path in self._files:
            try:
                info = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def attach(self, context: ssl.SSLContext, build: Callable[[], ssl.SSLContext]) -> None:
        """Hand ``context``'s new handshakes to what ``build`` makes after a change."""
        key = id(context)
        self._current[key] = context
        self._listeners.append((context, build))

        def newest(tls: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
            if self._lazy is not None and time.monotonic() - self._looked >= self._lazy:
                self._looked = time.monotonic()
                self.refresh()
            current = self._current[key]
            if current is not context:
                tls.context = current

        context.sni_callback = newest

    def refresh(self) -> bool:
        """Rebuild every listener's context if a file changed; True when it did."""
        stamps = self._stat()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            fresh = {id(context): build() for context, build in self._listeners}
        except ConfigError as exc:
            # Perhaps caught between two files of a change (a new key, the
            # old certificate): look again next time, whatever the stamps.
            self._stamps = ()
            event(log, "tls_reload_failed", logging.ERROR, error=str(exc),
                  action="new connections keep the previous certificates and CAs")
            return False
        self._current.update(fresh)
        event(log, "tls_reloaded", files=",".join(str(path) for path in self._files),
              listeners=len(fresh))
        return True
