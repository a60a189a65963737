"""The keys the agent takes commands from, kept across restarts (``trust.json``).

The sans-IO rules are ``epns.trust``; this holds the agent's trust, applies
the announcements that reach it (a ``trust`` command, or the sync reply's
``trust`` field), writes each one to the state directory before relying on it,
and remembers the last refusal for ``epns-agent status``: an agent that slept
through a whole rotation says so there, in its log, and in ``epns-check``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from epns.envelope import KeyLookup, key_id
from epns.errors import ConfigError, MessageError, UnknownSigner
from epns.logs import event
from epns.tokens import PublicKey
from epns.trust import CAS_FILE, STATE_FILE, Trust, accept_announcement, resume, stored

log = logging.getLogger(__name__)

TRUST = STATE_FILE
# The fleet CAs the agent trusts for the broker and the server: its config's
# broker.ca, or what a CA rotation announced. Written at each start.
CAS = CAS_FILE


class AgentTrust:
    """The agent's current trust; ``lookup`` for verifying commands."""

    def __init__(self, state_dir: Path, pinned: PublicKey) -> None:
        self._path = state_dir / TRUST
        self.ca_file = state_dir / CAS
        self._pinned = pinned
        try:
            saved: dict[str, Any] | None = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            saved = None
        except (OSError, ValueError) as exc:
            event(log, "trust_unreadable", logging.WARNING, path=str(self._path), error=str(exc))
            saved = {}
        self.trust, reset = resume(saved, pinned)
        if reset:
            event(log, "trust_reset", logging.WARNING, key=key_id(pinned),
                  reason="the pinned server key (broker.server_public_key) is not the one "
                         "the stored trust grew from: starting again from it")
            self._save()
        # The last refusal that a rotation may explain, for status.
        self.problem: str | None = None

    def lookup(self) -> KeyLookup:
        """The keys trusted now (retiring ones drop out by the clock)."""
        return self.trust.lookup(time.time())

    def refused(self, exc: UnknownSigner) -> None:
        """Remember a message signed by a key the agent does not know."""
        self.problem = str(exc)

    def accept(self, raw: Any, source: str) -> Trust | None:
        """Apply an announcement; the trust held before when it changed. A
        refusal is logged (and kept for status when it is an unknown signer)."""
        if not isinstance(raw, str):
            event(log, "trust_rejected", logging.WARNING, source=source,
                  reason="no announcement in it")
            return None
        try:
            trust = accept_announcement(self.trust, raw, now=time.time())
        except MessageError as exc:
            if isinstance(exc, UnknownSigner):
                self.problem = str(exc)
            event(log, "trust_rejected", logging.ERROR if isinstance(exc, UnknownSigner)
                  else logging.WARNING, source=source, kind=type(exc).__name__, reason=str(exc))
            return None
        if trust is self.trust:
            return None
        before, self.trust, self.problem = self.trust, trust, None
        self._save()
        event(log, "trust_updated", source=source, serial=trust.serial,
              keys=[f"{k.id}:{k.state.value}" for k in trust.keys],
              cas=[f"{c.fingerprint[:16]}:{c.state.value}" for c in trust.cas])
        return before

    def write_cas(self, configured: Path) -> Path:
        """Write the CAs to trust (announced, else ``configured``'s) to
        ``ca_file``, atomically; ConfigError when ``configured`` is unreadable."""
        pems = [c.pem for c in self.trust.live(time.time()).cas]
        try:
            text = ("".join(pem if pem.endswith("\n") else pem + "\n" for pem in pems)
                    if pems else configured.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read broker.ca: {exc}") from exc
        _replace(self.ca_file, text)
        return self.ca_file

    def status(self) -> dict[str, Any]:
        """For status.json: the serial, the keys, the CAs, the last refusal."""
        trust: Trust = self.trust.live(time.time())
        return {"serial": trust.serial, "keys": {k.id: k.state.value for k in trust.keys},
                "cas": {c.fingerprint[:16]: c.state.value for c in trust.cas},
                "problem": self.problem}

    def _save(self) -> None:
        _replace(self._path, json.dumps(stored(self.trust, self._pinned), sort_keys=True))


def _replace(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    with scratch.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)
