"""Windows: console control events instead of signals, ACLs instead of modes,
a power request instead of an inhibitor, a clock that skips sleep, and the
service (agent_push.windows_service).

Type-checked only (mypy --platform win32): none of this has run on Windows
(docs/platforms.md)."""

from __future__ import annotations

import sys

# mypy skips the rest of this module unless it checks for Windows.
assert sys.platform == "win32"

import asyncio
import csv
import ctypes
import os
import signal
import subprocess
import winreg
from collections.abc import Callable
from ctypes import wintypes
from pathlib import Path
from types import FrameType
from typing import Any

from agent_push.platform._hold import AwakeHold
from epns.errors import PlatformError

__all__ = ["PROCESS_GROUP", "awake_clock", "hold_awake", "install_stop_handlers",
           "kill_process_group", "machine_id", "private_directory", "process_alive",
           "service", "sync_directory", "write_file"]

# Ctrl+C and Ctrl+Break at the console; a service stops through SvcStop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGBREAK)
# A group of its own, which taskkill /T ends with everything it started.
PROCESS_GROUP: dict[str, Any] = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
# LocalSystem and the Administrators group: who a POSIX 0700 directory's root is.
PRIVILEGED = ("*S-1-5-18", "*S-1-5-32-544")
COMMAND_TIMEOUT = 30.0
# PowerCreateRequest's reason is a plain string; the request keeps the
# machine from sleeping on its own (PowerRequestSystemRequired).
POWER_REQUEST_CONTEXT_VERSION = 0
POWER_REQUEST_CONTEXT_SIMPLE_STRING = 0x1
POWER_REQUEST_SYSTEM_REQUIRED = 1
INVALID_HANDLE_VALUE = wintypes.HANDLE(-1).value

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """Call ``stop`` in ``loop`` on Ctrl+C or Ctrl+Break: asyncio has no
    add_signal_handler on Windows, so plain handlers hand it to the loop."""
    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists. Not ``os.kill(pid, 0)``: 0 is
    CTRL_C_EVENT there, sent to the process group ``pid``."""
    import psutil  # noqa: PLC0415 (epns-agent status only)

    return psutil.pid_exists(pid)


def private_directory(path: Path) -> None:
    """Create ``path`` for LocalSystem, the Administrators and the user running
    this alone, inherited by what is written in it (os.mkdir ignores the mode
    before Python 3.13); an existing directory keeps its ACL, as an existing
    POSIX directory keeps its mode. OSError when icacls fails."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    _restrict(path, "(OI)(CI)")


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` in binary mode. Windows has no file modes: a
    ``mode`` for the owner alone (0600) makes the file's ACL that of
    ``private_directory``, before the data is in it, an existing file's too;
    any other leaves the ACL it inherits. OSError when icacls fails."""
    if mode & 0o077 == 0:
        path.touch()
        _restrict(path, "")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_BINARY, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def sync_directory(path: Path) -> None:
    """Nothing: Windows cannot open a directory with os.open to fsync it; NTFS
    journals the rename's metadata itself."""


def kill_process_group(pid: int) -> None:
    """End process ``pid`` and every process it started (taskkill /T); one
    that has ended already is no error."""
    subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True,
                   timeout=COMMAND_TIMEOUT, check=False)


def awake_clock() -> float:
    """Seconds of unbiased interrupt time, which stands still while the
    machine sleeps; time.monotonic (GetTickCount64) runs on through it, so a
    resume would go unnoticed (``epns.netwatch``)."""
    ticks = ctypes.c_ulonglong()
    if not _kernel32.QueryUnbiasedInterruptTime(ctypes.byref(ticks)):
        raise ctypes.WinError(ctypes.get_last_error())
    return ticks.value / 1e7


class _Detailed(ctypes.Structure):
    _fields_ = (("LocalizedReasonModule", wintypes.HMODULE),
                ("LocalizedReasonId", wintypes.ULONG),
                ("ReasonStringCount", wintypes.ULONG),
                ("ReasonStrings", ctypes.POINTER(wintypes.LPWSTR)))


class _Reason(ctypes.Union):
    _fields_ = (("Detailed", _Detailed), ("SimpleReasonString", wintypes.LPWSTR))


class _ReasonContext(ctypes.Structure):
    _fields_ = (("Version", wintypes.ULONG), ("Flags", wintypes.DWORD), ("Reason", _Reason))


# Declared, so that 64-bit handles are not cut to a C int.
_kernel32.QueryUnbiasedInterruptTime.argtypes = (ctypes.POINTER(ctypes.c_ulonglong),)
_kernel32.QueryUnbiasedInterruptTime.restype = wintypes.BOOL
_kernel32.PowerCreateRequest.argtypes = (ctypes.POINTER(_ReasonContext),)
_kernel32.PowerCreateRequest.restype = wintypes.HANDLE
_kernel32.PowerSetRequest.argtypes = (wintypes.HANDLE, ctypes.c_int)
_kernel32.PowerSetRequest.restype = wintypes.BOOL
_kernel32.PowerClearRequest.argtypes = (wintypes.HANDLE, ctypes.c_int)
_kernel32.PowerClearRequest.restype = wintypes.BOOL
_kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
_kernel32.CloseHandle.restype = wintypes.BOOL


class PowerRequest(AwakeHold):
    """A power request (PowerCreateRequest, PowerSetRequest): Windows does not
    sleep on its own while it is set; ``powercfg /requests`` lists it."""

    def __init__(self, why: str) -> None:
        context = _ReasonContext(POWER_REQUEST_CONTEXT_VERSION,
                                 POWER_REQUEST_CONTEXT_SIMPLE_STRING)
        context.Reason.SimpleReasonString = why
        handle = _kernel32.PowerCreateRequest(ctypes.byref(context))
        if handle in (None, INVALID_HANDLE_VALUE):
            raise PlatformError(f"cannot hold sleep off: PowerCreateRequest: "
                                f"{ctypes.WinError(ctypes.get_last_error())}")
        self._handle: int | None = handle
        if not _kernel32.PowerSetRequest(handle, POWER_REQUEST_SYSTEM_REQUIRED):
            error = ctypes.WinError(ctypes.get_last_error())
            self.release()
            raise PlatformError(f"cannot hold sleep off: PowerSetRequest: {error}")

    def release(self) -> None:
        """Clear the request and close its handle."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        _kernel32.PowerClearRequest(handle, POWER_REQUEST_SYSTEM_REQUIRED)
        _kernel32.CloseHandle(handle)


def machine_id() -> str | None:
    """The MachineGuid Windows sets up at installation (the 64-bit registry
    view, also from a 32-bit Python), or None where it cannot be read."""
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography", 0,
                            winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:
            value, _ = winreg.QueryValueEx(key, "MachineGuid")
    except OSError:
        return None
    return str(value) or None


def hold_awake(why: str) -> AwakeHold:
    """Keep Windows from sleeping on its own until released (a power request)."""
    return PowerRequest(why)


def service(action: str, config: str) -> None:
    """Install (``install``) or remove (``remove``) the agent's Windows service;
    needs pywin32 (``pip install epns[windows]``) and an elevated prompt."""
    try:
        from agent_push import windows_service  # noqa: PLC0415 (pywin32: an extra)
    except ImportError as exc:
        raise PlatformError(f"the Windows service needs pywin32 ({exc}): "
                            "install epns[windows]") from exc
    if action == "install":
        windows_service.install(Path(config))
    else:
        windows_service.remove()


def _restrict(path: Path, inheritance: str) -> None:
    """Only LocalSystem, the Administrators and this user: no inherited entry."""
    grants = [f"{sid}:{inheritance}F" for sid in (*PRIVILEGED, "*" + _user_sid())]
    _command(["icacls", str(path), "/inheritance:r", "/grant:r", *grants])


def _user_sid() -> str:
    """The SID of the user running this (``whoami /user``)."""
    output = _command(["whoami", "/user", "/fo", "csv", "/nh"])
    row = next(csv.reader([output.strip()]), [])
    if len(row) != 2 or not row[1].startswith("S-"):
        raise OSError(f"whoami /user said {output.strip()!r}, not a user and a SID")
    return row[1]


def _command(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        raise OSError(f"{argv[0]} failed ({done.returncode}): "
                      f"{(done.stderr or done.stdout).strip()}")
    return done.stdout
