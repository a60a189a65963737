"""macOS: ``caffeinate`` holds sleep off; launchd runs the agent
(packaging/macos/com.epns.agent.plist)."""

from __future__ import annotations

import re
import subprocess
import sys

assert sys.platform == "darwin"

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


# The hardware UUID, as "System Information" shows it.
_PLATFORM_UUID = re.compile(r'"IOPlatformUUID" = "([0-9A-Fa-f-]+)"')


def machine_id() -> str | None:
    """The hardware UUID (``ioreg``'s IOPlatformUUID), or None where it
    cannot be read."""
    try:
        found = subprocess.run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _PLATFORM_UUID.search(found.stdout)
    return match.group(1) if match else None


def hold_awake(why: str) -> AwakeHold:
    """Hold idle and system sleep off with ``caffeinate -i -s`` (a power
    assertion while its child runs; ``why`` is for the log, as caffeinate
    takes no reason). PlatformError when it cannot run."""
    del why  # caffeinate names the assertion after itself
    return ChildHold(["caffeinate", "-i", "-s"], "a power assertion (caffeinate)")


def service(action: str, config: str) -> None:
    """macOS services are launchd jobs: nothing to register from here."""
    raise PlatformError(
        f"epns-agent service {action} is for Windows; on macOS copy "
        "packaging/macos/com.epns.agent.plist to /Library/LaunchDaemons and run: "
        "launchctl bootstrap system /Library/LaunchDaemons/com.epns.agent.plist "
        f"(docs/platforms.md); its config: {config}")
