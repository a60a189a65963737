"""macOS: ``caffeinate`` holds sleep off; launchd runs the agent
(packaging/macos/com.epns.agent.plist)."""

from __future__ import annotations

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
           "kill_process_group", "private_directory", "process_alive", "service",
           "sync_directory", "write_file"]


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
