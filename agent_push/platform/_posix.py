"""What Linux and macOS share: signals, file modes, process groups, the clock,
and a sleep inhibitor held by a child process."""

from __future__ import annotations

import sys

# mypy skips the rest of this module when it checks for Windows.
assert sys.platform != "win32"

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from agent_push.platform._hold import AwakeHold
from epns.errors import PlatformError

# Either one ends ``epns-agent run`` cleanly: the agent says goodbye (its
# retained offline presence) before it exits. SIGHUP keeps its default.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Keyword arguments that start a child in a process group of its own, so that
# killing the group kills what it started too.
PROCESS_GROUP: dict[str, Any] = {"start_new_session": True}
# The line the inhibitor's child prints once the lock is taken.
HELD = b"held\n"
# A shell that says so, then waits for its stdin to close: when the agent
# releases the hold, or dies, the pipe closes and the lock goes with the child.
WAITER = ("sh", "-c", "echo held; read _")
TAKE_TIMEOUT = 10.0


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """Call ``stop`` in ``loop`` on SIGTERM or SIGINT."""
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def private_directory(path: Path) -> None:
    """Create ``path`` (and its parents) with mode 0700; an existing directory
    keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, an existing file's included,
    and fsync it: what is written here is an identity or its config, which a
    rename may make current right after."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    # os.open's mode applies only to a new file: a key must not keep looser ones.
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def sync_directory(path: Path) -> None:
    """fsync directory ``path``, so that renames in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def kill_process_group(pid: int) -> None:
    """Kill the process group ``pid`` leads (started with ``PROCESS_GROUP``);
    one that has ended already is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def awake_clock() -> float:
    """Seconds on a clock that stands still while the machine sleeps (Linux's
    CLOCK_MONOTONIC, macOS's mach_absolute_time): ``epns.netwatch`` tells a
    resume by the wall clock running ahead of it."""
    return time.monotonic()


class ChildHold(AwakeHold):
    """Sleep held off by a child: ``argv`` takes the lock, then runs ``WAITER``,
    which prints ``HELD`` and waits for its stdin to close."""

    def __init__(self, argv: Sequence[str], facility: str,
                 timeout: float = TAKE_TIMEOUT) -> None:
        self._facility = facility
        try:
            self._process = subprocess.Popen([*argv, *WAITER], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise PlatformError(f"cannot hold sleep off through {facility}: {argv[0]} "
                                f"cannot run ({exc.strerror or exc})") from exc
        if _first_line(self._process.stdout, timeout) == HELD:
            return
        self._end()
        stderr = self._process.stderr
        said = stderr.read().decode(errors="replace").strip() if stderr is not None else ""
        self._close_pipes()
        raise PlatformError(f"cannot hold sleep off through {facility}: "
                            f"{said or f'{argv[0]} exited with {self._process.returncode}'}")

    def release(self) -> None:
        """Close the child's stdin: it ends, and the lock with it."""
        self._end()
        self._close_pipes()

    def _end(self) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):  # the child may have gone already
                stdin.close()
        try:
            self._process.wait(TAKE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _close_pipes(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout, self._process.stderr):
            if pipe is not None:
                pipe.close()


def _first_line(stream: IO[bytes] | None, timeout: float) -> bytes:
    """The child's first line, or what it said before it ended or ``timeout`` ran out."""
    if stream is None:
        return b""
    deadline = time.monotonic() + timeout
    got = b""
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            break
        chunk = os.read(stream.fileno(), 64)
        if not chunk:
            break
        got += chunk
    return got
