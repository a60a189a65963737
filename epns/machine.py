"""A machine's default agent id: its host name, made an agent id, and a stable
fingerprint of the machine that tells two machines of one name apart.

``epns-agent enrol`` without ``--id`` sends both, so one install command
works on every machine of a fleet. The fingerprint is a SHA-256 of the
machine's id (``/etc/machine-id`` on Linux), never the id itself: that one is
a secret-ish value other software keys on (systemd derives per-application
ids from it). The server keeps the fingerprint per agent; on a name taken by
another machine it picks the next of ``candidates`` that is free.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from epns import topics

__all__ = ["FINGERPRINT", "SUFFIX_LENGTH", "agent_id_from_hostname", "candidates",
           "fingerprint"]

# A fingerprint as sent: 64 lower-case hex digits.
FINGERPRINT = r"^[0-9a-f]{64}$"
# Hex digits of the fingerprint that make a taken name unique.
SUFFIX_LENGTH = 6
MAX_COUNTER = 99
_DOMAIN = b"epns machine fingerprint v1\n"
_NOT_ALLOWED = re.compile(r"[^a-z0-9._-]+")
_ID_LENGTH = 64


def fingerprint(machine_id: str) -> str | None:
    """The SHA-256 (hex) of a machine id, domain-separated so it matches no
    other product's hash of the same id; None for an empty id."""
    value = machine_id.strip()
    if not value:
        return None
    return hashlib.sha256(_DOMAIN + value.encode()).hexdigest()


def agent_id_from_hostname(hostname: str) -> str:
    """The host name's first label, lower-cased, in the agent-id alphabet:
    ``PC 17.corp.example`` gives ``pc-17``. ``agent`` when nothing is left, or
    when the name is reserved."""
    label = hostname.strip().split(".", 1)[0].lower()
    name = _NOT_ALLOWED.sub("-", label).lstrip("._-")[:_ID_LENGTH].rstrip("._-")
    if not topics.is_valid_name(name) or name == topics.SERVER_NAME:
        return "agent"
    return name


def candidates(base: str, machine: str | None) -> Iterator[str]:
    """The ids to try for a machine that asks for ``base``, in order: ``base``;
    then ``base-<first 6 hex of the fingerprint>``, the same on every
    re-install of that machine; then numbered ones (``-2`` .. ``-99``) for the
    rare case that is taken too, or when there is no fingerprint."""
    yield base
    if machine:
        suffixed = _with_suffix(base, machine[:SUFFIX_LENGTH])
        yield suffixed
        base = suffixed
    for number in range(2, MAX_COUNTER + 1):
        yield _with_suffix(base, str(number))


def _with_suffix(base: str, suffix: str) -> str:
    return f"{base[:_ID_LENGTH - len(suffix) - 1]}-{suffix}"
