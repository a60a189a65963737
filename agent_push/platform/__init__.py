"""Everything the agent does differently per operating system, behind one door:
where its config is, how it is told to stop, file permissions, process groups,
the clock that skips sleep, the machine's interfaces, holding sleep off, and
service registration.

One branch per system, chosen by ``sys.platform`` checks that mypy narrows:
``_linux`` (any POSIX system but macOS), ``_darwin`` (both on ``_posix``) and
``_windows``. Each runs only on its own system; CI type-checks every one
(``mypy --platform win32|darwin``). docs/platforms.md says what has run on a
real machine (Linux) and what has only been type-checked (Windows, macOS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from agent_push.platform import paths
from agent_push.platform._hold import AwakeHold
from epns.envelope import Interface

if sys.platform == "win32":
    from agent_push.platform._windows import (
        PROCESS_GROUP,
        awake_clock,
        hold_awake,
        install_stop_handlers,
        kill_process_group,
        machine_id,
        private_directory,
        process_alive,
        service,
        sync_directory,
        write_file,
    )
elif sys.platform == "darwin":
    from agent_push.platform._darwin import (
        PROCESS_GROUP,
        awake_clock,
        hold_awake,
        install_stop_handlers,
        kill_process_group,
        machine_id,
        private_directory,
        process_alive,
        service,
        sync_directory,
        write_file,
    )
else:
    from agent_push.platform._linux import (
        PROCESS_GROUP,
        awake_clock,
        hold_awake,
        install_stop_handlers,
        kill_process_group,
        machine_id,
        private_directory,
        process_alive,
        service,
        sync_directory,
        write_file,
    )

__all__ = [
    "PROCESS_GROUP",
    "AwakeHold",
    "awake_clock",
    "default_config",
    "hold_awake",
    "install_stop_handlers",
    "interfaces",
    "kill_process_group",
    "machine_id",
    "normal_mac",
    "private_directory",
    "process_alive",
    "run",
    "service",
    "sync_directory",
    "write_file",
]


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on the event loop this system needs: asyncio's
    default, except on Windows, whose default (Proactor) loop has no
    ``add_reader``/``add_writer``, on which the MQTT link drives paho's
    socket; its selector loop has them (and no subprocesses, which is why
    ``CommandSync`` runs its program from a thread)."""
    factory = asyncio.SelectorEventLoop if sys.platform == "win32" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def default_config() -> Path:
    """The config file ``epns-agent`` reads when ``--config`` is not given
    (``paths.config_file`` for this system and environment)."""
    return Path(paths.config_file(sys.platform, os.environ))


def interfaces() -> tuple[Interface, ...]:
    """Each IPv4/IPv6 address with its prefix and the MAC of its interface;
    the server elects Wake-on-LAN relays from these. psutil enumerates them on
    every system; only the MAC's spelling differs (``normal_mac``)."""
    import psutil  # noqa: PLC0415 (not before the first connection: idle memory)

    # AF_PACKET on Linux, AF_LINK on macOS and Windows.
    link = getattr(psutil, "AF_LINK", -1)
    found: list[Interface] = []
    for addresses in psutil.net_if_addrs().values():
        mac = normal_mac(next((a.address for a in addresses if a.family == link), None))
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


def normal_mac(text: str | None) -> str | None:
    """A MAC as Linux spells it (``aa:bb:cc:dd:ee:ff``): psutil gives
    ``AA-BB-CC-DD-EE-FF`` on Windows. None for none, or an all-zero one
    (loopback, tunnels)."""
    if text is None:
        return None
    mac = text.replace("-", ":").lower()
    return None if mac == "00:00:00:00:00:00" else mac
