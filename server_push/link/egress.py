"""Where the server connects for an admin-set target, fenced (``epns.egress``):
the name is resolved, every address it resolves to is checked, and the
connection goes to a checked address, never to a second resolution of the
name: a DNS answer that changes between the check and the connection (DNS
rebinding) cannot lead the server to its own loopback services.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx

from epns import egress
from epns.errors import EgressRefused

SETTING = "notifications.allowed_networks"
RESOLVE_TIMEOUT = 10.0


async def checked_address(host: str, port: int, allowed: Sequence[egress.IPNetwork],
                          what: str) -> str:
    """The address to connect to for ``host``: EgressRefused naming the
    address and the reason when any address it resolves to is fenced off;
    OSError when it does not resolve."""
    found = egress.literal(host)
    if found is not None:
        addresses = [found]
    else:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
        addresses = []
        for info in infos:
            address = egress.literal(str(info[4][0]).partition("%")[0])
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OSError(f"{host} resolves to no IP address")
    for address in addresses:
        why = egress.refusal(address, allowed, SETTING)
        if why is not None:
            named = "" if found is not None else f"{host} resolves to {address}; "
            raise EgressRefused(f"{what} refused: {named}{why}")
    return str(addresses[0])


def _port(parts: urllib.parse.SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


async def webhook_target(url: str, allowed: Sequence[egress.IPNetwork]) -> dict[str, Any]:
    """The keyword arguments of an httpx request to ``url`` pinned to its
    checked address: the URL with that address, the name in the Host header
    and as the TLS server name (so the certificate is still checked for it)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    address = await checked_address(host, _port(parts), allowed, "the webhook")
    if egress.literal(host) is not None:
        return {"url": url}
    pinned = httpx.URL(url).copy_with(host=address)
    return {"url": pinned, "headers": {"Host": parts.netloc.rpartition("@")[2]},
            "extensions": {"sni_hostname": host}}
