"""What the agent says about itself in its birth message."""

from __future__ import annotations

import ipaddress
import socket

from epns.envelope import Interface


def interfaces() -> tuple[Interface, ...]:
    """Each IPv4/IPv6 address with its prefix and the MAC of its interface;
    the server elects Wake-on-LAN relays from these."""
    import psutil  # noqa: PLC0415 (not before the first connection: idle memory)

    link = getattr(psutil, "AF_LINK", -1)
    found: list[Interface] = []
    for addresses in psutil.net_if_addrs().values():
        mac = next((a.address for a in addresses if a.family == link), None)
        if mac in (None, "00:00:00:00:00:00"):
            mac = None
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6) or not address.netmask:
                continue
            host = address.address.split("%")[0]
            try:
                # A netmask's set bits are the prefix length, for IPv4 and IPv6 alike.
                prefix = bin(int(ipaddress.ip_address(address.netmask))).count("1")
            except ValueError:
                continue
            found.append(Interface(host, prefix, mac))
    return tuple(found)
