"""The agent as a Windows service (pywin32: ``pip install epns[windows]``).

``epns-agent service install [--config PATH]`` registers it (automatic start,
restarted by the service manager after a failure) to run with that agent.toml,
``%ProgramData%\\epns\\agent.toml`` by default; ``epns-agent service remove``
stops and removes it. pywin32's own command line works too:
``python -m agent_push.windows_service install|start|stop|remove|debug``
(``debug`` runs it in the console, for a first look).

The service runs the same ``Agent`` as ``epns-agent run`` in the service's
thread, on asyncio's own loop; SvcStop hands the stop to that loop, and the
agent says goodbye (its retained offline presence) before the service reports
stopped. Its log lines go to ``agent.log`` in the state directory (10 MiB,
and three older files of 10 MiB: RotatingFileHandler's backupCount), as a
service has no console; start, stop and a failure to start
are in the Windows event log too.

Type-checked only (mypy --platform win32): this has never run on Windows
(docs/platforms.md).
"""

from __future__ import annotations

import sys

# mypy skips the rest of this module unless it checks for Windows.
assert sys.platform == "win32"

import asyncio
import contextlib
import logging
import subprocess
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

import pywintypes
import servicemanager
import win32service
import win32serviceutil

from agent_push import platform
from agent_push.agent import Agent
from agent_push.cli import build_context, load_settings
from epns import logs
from epns.errors import EPNSError, PlatformError

NAME = "epns-agent"
CONFIG_OPTION = "config"
LOG_NAME = "agent.log"
LOG_BYTES = 10 * 1024 * 1024
LOG_FILES = 3
# After a failure the service manager starts it again in 5 s, as the systemd
# unit's Restart=always, RestartSec=5 does; the count resets after a day.
RECOVERY = ("reset=", "86400", "actions=", "restart/5000/restart/5000/restart/5000")


class AgentService(win32serviceutil.ServiceFramework):
    """The ``epns-agent`` service: runs the agent until SvcStop."""

    _svc_name_ = NAME
    _svc_display_name_ = "epns push wake-up agent"
    _svc_description_ = ("Keeps one outbound TLS MQTT connection to the epns broker and syncs "
                         "with the management server on wake-up.")

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        # SvcStop comes on another thread, maybe before the loop exists.
        self._lock = threading.Lock()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def SvcStop(self) -> None:  # pywin32 names it
        """Ask the agent to stop; SvcDoRun returns once it has."""
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
        with self._lock:
            self._stopping = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    def SvcDoRun(self) -> None:  # pywin32 names it
        """Run the agent until SvcStop; a configuration that cannot be used
        is logged to the event log and stops the service."""
        servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE,
                              servicemanager.PYS_SERVICE_STARTED, (NAME, ""))
        try:
            settings = load_settings(configured_config())
            _log_to_file(settings.log.level, settings.log.format,
                         settings.state_dir / LOG_NAME)
            agent = Agent(build_context(settings))
        except EPNSError as exc:
            servicemanager.LogErrorMsg(f"{NAME}: {exc}")
            return
        platform.run(self._serve(agent))
        servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE,
                              servicemanager.PYS_SERVICE_STOPPED, (NAME, ""))

    async def _serve(self, agent: Agent) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
            if self._stopping:
                stop.set()
        await agent.run(stop)


def configured_config() -> Path:
    """The agent.toml ``install`` registered, else the system's default."""
    value = win32serviceutil.GetServiceCustomOption(NAME, CONFIG_OPTION,
                                                    str(platform.default_config()))
    return Path(str(value))


def install(config: Path) -> None:
    """Register the service to start automatically with ``config``, restarted
    after a failure. PlatformError when Windows refuses (not elevated, say)."""
    try:
        win32serviceutil.InstallService(
            f"{__name__}.{AgentService.__name__}", NAME, AgentService._svc_display_name_,
            startType=win32service.SERVICE_AUTO_START,
            description=AgentService._svc_description_)
        win32serviceutil.SetServiceCustomOption(NAME, CONFIG_OPTION, str(config))
    except pywintypes.error as exc:
        raise PlatformError(f"cannot install the {NAME} service: {exc.strerror}") from exc
    done = subprocess.run(["sc.exe", "failure", NAME, *RECOVERY], capture_output=True,
                          text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise PlatformError(f"the {NAME} service is installed, but sc.exe failure said: "
                            f"{(done.stdout or done.stderr).strip()}")


def remove() -> None:
    """Stop the service if it runs, and remove it."""
    with contextlib.suppress(pywintypes.error):  # not running: nothing to stop
        win32serviceutil.StopService(NAME)
    try:
        win32serviceutil.RemoveService(NAME)
    except pywintypes.error as exc:
        raise PlatformError(f"cannot remove the {NAME} service: {exc.strerror}") from exc


def _log_to_file(level: str, fmt: str, path: Path) -> None:
    """The agent's log lines, in its configured format, to a rotated file."""
    logs.configure(level, fmt)
    root = logging.getLogger()
    platform.private_directory(path.parent)
    handler = RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_FILES,
                                  encoding="utf-8")
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]


if __name__ == "__main__":
    win32serviceutil.HandleCommandLine(AgentService)
