"""The fence on where the server itself connects for an admin-set target (the
offline notifier's webhook and SMTP host), sans-IO.

An address must be inside one of the operator's allowed networks. Loopback,
link-local (where cloud metadata services answer, 169.254.169.254), the
unspecified address, multicast and the known metadata addresses outside
link-local are refused even then, unless an allowed network other than a
catch-all (``0.0.0.0/0``, ``::/0``) names them: the server's own loopback
services (its front socket's peers, a database, the broker's admin ports) are
never a webhook by accident or by a stolen admin session. An IPv4-mapped IPv6
address is judged as the IPv4 address it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (network, what it is): refused unless named by a specific allowed network.
GUARDED: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("127.0.0.0/8"), "a loopback address (this server's own services)"),
    (ipaddress.ip_network("::1/128"), "a loopback address (this server's own services)"),
    (ipaddress.ip_network("169.254.0.0/16"),
     "a link-local address (cloud metadata services answer at 169.254.169.254)"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("0.0.0.0/8"), "an unspecified address (this host)"),
    (ipaddress.ip_network("::/128"), "the unspecified address (this host)"),
    (ipaddress.ip_network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.ip_network("ff00::/8"), "a multicast address"),
    (ipaddress.ip_network("100.100.100.200/32"), "a cloud metadata address"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "a cloud metadata address"),
)


def parse_networks(texts: Sequence[str]) -> tuple[IPNetwork, ...]:
    """The operator's allowed networks, parsed (ValueError names a bad one)."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def refusal(address: IPAddress, allowed: Sequence[IPNetwork], setting: str) -> str | None:
    """Why the server may not connect to ``address`` (``setting`` names the
    allowed networks in the message), or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    same = [net for net in allowed if net.version == address.version]
    if not any(address in net for net in same):
        return f"{address} is outside the server's {setting}"
    for guarded, what in GUARDED:
        if address in guarded and not any(address in net and net.prefixlen > 0
                                           for net in same):
            return (f"{address} is {what}: refused unless the server's {setting} names it "
                    f"(for example \"{address}/{address.max_prefixlen}\")")
    return None


def literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one (brackets allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
