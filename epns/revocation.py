"""The revocation list: a text file the broker honours on every connect.

One entry per line, ``#`` starts a comment::

    agent:laptop-0042        # this agent id, whatever it presents
    serial:5f3a...           # one client certificate (hex serial)
    token:0c1d...            # one token (its jti)

A bare word is read as an agent id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from epns.errors import ConfigError

__all__ = ["RevocationList", "parse_revocations"]


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Revoked agent ids, certificate serials and token ids."""

    agents: frozenset[str] = field(default_factory=frozenset)
    serials: frozenset[str] = field(default_factory=frozenset)
    tokens: frozenset[str] = field(default_factory=frozenset)

    def reason(self, name: str, serial: str | None, token_id: str | None) -> str | None:
        """Why this identity is revoked, or None when it is not."""
        if name in self.agents:
            return f"agent:{name}"
        if serial is not None and serial.lower() in self.serials:
            return f"serial:{serial}"
        if token_id is not None and token_id in self.tokens:
            return f"token:{token_id}"
        return None


def parse_revocations(text: str, source: str = "revocation list") -> RevocationList:
    """Parse the file format above; unknown kinds are a ConfigError."""
    buckets: dict[str, set[str]] = {"agent": set(), "serial": set(), "token": set()}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, sep, value = line.partition(":")
        if not sep:
            kind, value = "agent", line
        kind, value = kind.strip().lower(), value.strip()
        if kind not in buckets or not value:
            raise ConfigError(f"{source}:{number}: expected agent:ID, serial:HEX or token:ID")
        buckets[kind].add(value.lower() if kind == "serial" else value)
    return RevocationList(
        frozenset(buckets["agent"]), frozenset(buckets["serial"]), frozenset(buckets["token"])
    )
