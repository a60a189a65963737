"""``epns-server health``: the container and systemd health check.

It asks the running server's own ``/api/v1/health`` over loopback and exits 0
when the server answers with status "ok" (the database answers), 1 otherwise.
The image has no curl; this needs nothing but the standard library.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from epns.server_config import HttpSettings

TIMEOUT = 4.0
_ANY_ADDRESS = {"", "0.0.0.0", "::"}  # noqa: S104 - compared against, not bound


def health_url(http: HttpSettings) -> str:
    """Where the server listening per ``http`` answers on this machine."""
    host = http.host
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{http.port}/api/v1/health"


def probe(http: HttpSettings) -> tuple[bool, str]:
    """(healthy, what to print)."""
    # The server's own certificate, over loopback: its name may be the public
    # one only, and who answers is not in doubt. TLS still carries the request.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = health_url(http)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as answer:  # noqa: S310 - an https URL built above
            body = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{url}: no answer ({exc})"
    healthy = isinstance(body, dict) and body.get("status") == "ok"
    return healthy, f"{url}: {json.dumps(body, sort_keys=True)}"
