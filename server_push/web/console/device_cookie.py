"""The device cookie: a browser's proof that it logged in as an account before.

OWASP's "device cookies" against lock-out: after a successful login the
browser gets ``<nonce>.<HMAC(server secret, account, nonce)>``. At the next
login for that account the throttle counts this browser apart from its
address (``throttle.py``), so failures an attacker causes from the same
address do not refuse it. It proves nothing else: the password is still
checked, and it is no session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "epns_device"
# A browser that has not logged in for this long is a stranger again.
MAX_AGE = 90 * 86400
_MAX_LEN = 200


def issue(secret: str, account: str) -> str:
    """A new device cookie value for ``account``."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_mac(secret, account, nonce)}"


def device_of(secret: str, account: str, value: str | None) -> str | None:
    """The cookie's nonce when it was issued by this server for ``account``, else None."""
    if not value or len(value) > _MAX_LEN:
        return None
    nonce, _, mac = value.partition(".")
    if not nonce or not hmac.compare_digest(mac, _mac(secret, account, nonce)):
        return None
    return nonce


def _mac(secret: str, account: str, nonce: str) -> str:
    message = f"epns-device\n{account}\n{nonce}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
