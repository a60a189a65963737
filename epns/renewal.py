"""When an agent renews its identity, sans-IO: the due time, the retry delays,
and the validity read from what the agent holds.

An identity (a client certificate, or a token) is renewed once two thirds of
its lifetime have passed, so a third is left for failures: a server down for
days, an agent asleep. A fleet enrolled in one afternoon would otherwise
renew in one second 550 days later, so each agent's due time is spread over
the next twelfth of the lifetime (``SPREAD``), by a draw the caller makes.

After a failed renewal the agent retries with full jitter (a draw in
``[0, min(cap, base * 2**n)]``, at least ``MIN_RETRY`` seconds), and never
waits longer than half the time its identity has left: the closer the end,
the more often it tries. Once it has expired, the plain backoff again: an
expired identity proves nothing (the server refuses it until the agent is
enrolled again), and a fleet of them retrying every second would only load
the server.

The certificate's validity is read from its DER bytes here, by hand: the
agent keeps cryptography's x509 module out of its idle memory (2 MiB,
``agent_push.cli``).
"""

from __future__ import annotations

import binascii
import calendar
import json
import re
from dataclasses import dataclass

from epns.errors import PKIError
from epns.tokens import b64decode

__all__ = [
    "FRACTION",
    "MIN_RETRY",
    "SPREAD",
    "Lifetime",
    "certificate_lifetime",
    "pem_der",
    "retry_delay",
    "token_lifetime",
]

# The share of the lifetime after which an identity is renewed.
FRACTION = 2.0 / 3.0
# The due time is spread over this share of the lifetime after FRACTION.
SPREAD = 1.0 / 12.0
# The shortest wait between two tries (seconds): a refusal is not retried in a loop.
MIN_RETRY = 1.0


@dataclass(frozen=True, slots=True)
class Lifetime:
    """When an identity starts and stops being valid (UNIX seconds)."""

    not_before: float
    not_after: float

    @property
    def length(self) -> float:
        """Seconds from start to end."""
        return self.not_after - self.not_before

    def due_at(self, draw: float = 0.0) -> float:
        """When renewal is due: two thirds through, plus ``draw`` (0..1) of
        the spread."""
        return self.not_before + self.length * (FRACTION + SPREAD * min(max(draw, 0.0), 1.0))

    def left(self, now: float) -> float:
        """Seconds until it expires (negative once it has)."""
        return self.not_after - now


def retry_delay(failures: int, *, base: float, cap: float, draw: float,
                left: float) -> float:
    """Seconds until the next try after ``failures`` failed ones in a row:
    full jitter (``draw`` in 0..1) over ``min(cap, base * 2**(failures-1))``,
    at least ``MIN_RETRY``, at most half of what is ``left`` of the identity
    while some is left."""
    ceiling = min(cap, base * 2.0 ** max(failures - 1, 0))
    delay = max(MIN_RETRY, ceiling * min(max(draw, 0.0), 1.0))
    if left <= 0:
        return delay
    return max(MIN_RETRY, min(delay, left / 2.0))


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def pem_der(pem: bytes) -> bytes:
    """The DER bytes of the first certificate in ``pem``; PKIError without one."""
    found = _PEM.search(pem)
    if found is None:
        raise PKIError("no PEM certificate found")
    try:
        return binascii.a2b_base64(b"".join(found.group(1).split()), strict_mode=True)
    except binascii.Error as exc:
        raise PKIError(f"the PEM certificate is not valid base64: {exc}") from exc


def certificate_lifetime(der: bytes) -> Lifetime:
    """notBefore and notAfter of an X.509 certificate (DER); PKIError when
    the bytes are not one."""
    try:
        certificate, _ = _element(der, 0, 0x30)
        tbs, _ = _element(der, certificate[0], 0x30)
        at = tbs[0]
        if der[at] == 0xA0:  # [0] EXPLICIT version
            at = _element(der, at, 0xA0)[1]
        at = _element(der, at, 0x02)[1]  # serialNumber
        at = _element(der, at, 0x30)[1]  # signature algorithm
        at = _element(der, at, 0x30)[1]  # issuer
        validity, _ = _element(der, at, 0x30)
        not_before, after = _time(der, validity[0])
        not_after, _ = _time(der, after)
    except (IndexError, ValueError) as exc:
        raise PKIError(f"not an X.509 certificate: {exc}") from exc
    return Lifetime(not_before, not_after)


def token_lifetime(token: str) -> Lifetime:
    """``iat`` and ``exp`` of an agent token (``epns.tokens``), read without
    checking its signature: the agent holds it, the server checks it."""
    parts = token.strip().split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not v1.<claims>.<signature>")
        claims = json.loads(b64decode(parts[1]))
        return Lifetime(float(claims["iat"]), float(claims["exp"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise PKIError(f"the token's claims cannot be read: {exc}") from exc


def _element(der: bytes, at: int, tag: int) -> tuple[tuple[int, int], int]:
    """The DER element at ``at``, which must have ``tag``: ((content start,
    content end), the next element's offset)."""
    if der[at] != tag:
        raise ValueError(f"expected tag 0x{tag:02x} at {at}, found 0x{der[at]:02x}")
    size = der[at + 1]
    start = at + 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4:
            raise ValueError(f"unsupported length of {count} bytes at {at}")
        size = int.from_bytes(der[start:start + count], "big")
        start += count
    end = start + size
    if end > len(der):
        raise ValueError(f"element at {at} runs past the end")
    return (start, end), end


def _time(der: bytes, at: int) -> tuple[float, int]:
    """A UTCTime or GeneralizedTime (both ``Z``), as UNIX seconds."""
    tag = der[at]
    if tag not in (0x17, 0x18):
        raise ValueError(f"expected a time at {at}, found tag 0x{tag:02x}")
    (start, end), after = _element(der, at, tag)
    text = der[start:end].decode("ascii")
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not in UTC")
    if tag == 0x17:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"  # RFC 5280 4.1.2.5.1
    fields = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
    year, month, day, hour, minute, second = (int(f) for f in fields)
    return float(calendar.timegm((year, month, day, hour, minute, second))), after
