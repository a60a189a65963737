"""Linux (and any other POSIX system but macOS): logind holds sleep off."""

from __future__ import annotations

import sys
from pathlib import Path

assert sys.platform != "win32"

from agent_push.platform._hold import AwakeHold
from agent_push.platform._posix import (
    PROCESS_GROUP,
    ChildHold,
    awake_clock,
    install_stop_handlers,
    kill_process_group,
    private_directory,
    process_alive,
    sync_directory,
    write_file,
)
from epns.errors import PlatformError

__all__ = ["PROCESS_GROUP", "awake_clock", "hold_awake", "install_stop_handlers",
           "kill_process_group", "machine_id", "private_directory", "process_alive",
           "service", "sync_directory", "write_file"]


# Where a machine id is (systemd, then D-Bus's copy on older systems).
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def machine_id() -> str | None:
    """This machine's id as the system keeps it (``/etc/machine-id``), or
    None where there is none to read."""
    for path in MACHINE_ID_FILES:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text
    return None


def hold_awake(why: str) -> AwakeHold:
    """Take a logind sleep inhibitor (``block`` mode) through ``systemd-inhibit``,
    which holds it while its child runs. PlatformError when logind cannot be
    reached (no D-Bus system bus, no systemd-logind) or refuses."""
    return ChildHold(["systemd-inhibit", "--what=sleep", "--who=epns-agent", f"--why={why}",
                      "--mode=block"], "logind (systemd-inhibit)")


def service(action: str, config: str) -> None:
    """Linux services are systemd units: nothing to register from here."""
    raise PlatformError(
        f"epns-agent service {action} is for Windows; on Linux install "
        "systemd/epns-agent.service and run: systemctl enable --now epns-agent "
        f"(docs/install-agent.md); its config: {config}")
