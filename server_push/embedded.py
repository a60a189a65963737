"""The all-in-one default: the server runs the embedded broker as a child
process (``python -m broker``), restarts it if it dies, and stops it on exit.

A child process, not an import: the broker and the server stay independent
packages, and the broker keeps its own event loop and GC policy.

The broker must never outlive the server: an orphan holds 8883 and 443, and
the next start fails with "Address already in use". Three things see to it:

- the server stops the child on every way out of ``run`` (``cli._serve``);
- on Linux the child asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``), which covers SIGKILL and crashes;
- the child's pid is kept in ``state_dir/broker.pid``; a start that finds a
  broker of an earlier server still running there names it in the log and
  stops it before starting its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path

from epns.logs import event

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
RESTART_DELAY = (1.0, 30.0)
PIDFILE = "broker.pid"
UPSTREAM_VARIABLE = "EPNS_BROKER_LISTENERS__FALLBACK__HTTP_UPSTREAM"
# epns-broker's exit status for settings or files it cannot use (broker.cli).
CONFIG_ERROR = 2
# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1
STALE_STOP_TIMEOUT = 10.0


# Looked up here, in the parent: between fork and exec the child may not
# load a library (another thread of the parent may have held the loader's lock).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent(parent: int) -> None:
    """Run in the child between fork and exec: SIGTERM when the parent dies.
    If the parent died before the request took effect, go now."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def _is_broker(pid: int) -> bool:
    """Whether ``pid`` is a running ``python -m broker`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-m" in argv and b"broker" in argv


def stop_stale_broker(pidfile: Path) -> int | None:
    """Stop the broker an earlier server left running, named in ``pidfile``;
    returns its pid, or None when there was none."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not _is_broker(pid):
        return None
    event(log, "stale_broker", logging.ERROR, pid=pid, pidfile=pidfile,
          action="stopping it: an earlier server's broker still holds its ports")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STALE_STOP_TIMEOUT
    while _is_broker(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_broker(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


class EmbeddedBroker:
    """Supervises one ``epns-broker`` child; ``ready`` is set while it serves."""

    def __init__(self, config: Path | None, pidfile: Path, front_socket: Path | None) -> None:
        self._config = config
        self._front_socket = front_socket
        self._pidfile = pidfile
        self._process: asyncio.subprocess.Process | None = None
        self._last_line = ""
        self.ready = asyncio.Event()
        # Set when the broker cannot start with its settings, and is not restarted.
        self.gave_up = asyncio.Event()
        self._stopping = False

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "broker", "--init-pki"]
        if self._config is not None:
            argv += ["--config", str(self._config)]
        return argv

    def _env(self) -> dict[str, str]:
        """The broker's one-port listener (443) relays HTTPS to this server's
        front socket, wherever the server's settings put it; the variable set
        by the operator wins."""
        env = dict(os.environ)
        path = self._front_socket
        env.setdefault(UPSTREAM_VARIABLE, "" if path is None else str(path.absolute()))
        return env

    async def run(self) -> None:
        """Start the broker and keep it running until ``stop``."""
        delay = RESTART_DELAY[0]
        await asyncio.to_thread(stop_stale_broker, self._pidfile)
        self._pidfile.parent.mkdir(parents=True, exist_ok=True)
        parent = os.getpid()
        while not self._stopping:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv(), env=self._env(), stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=functools.partial(_die_with_parent, parent))
            self._pidfile.write_text(f"{self._process.pid}\n")
            event(log, "broker_started", pid=self._process.pid)
            await self._relay(self._process)
            code = await self._process.wait()
            self.ready.clear()
            if self._stopping:
                break
            if code == CONFIG_ERROR:
                # Its settings or files are wrong (no listener could be
                # bound, a missing certificate): a restart would fail the
                # same way, in a loop. The server serves on without it.
                event(log, "broker_cannot_start", logging.ERROR, code=code,
                      reason=self._last_line or "see the [broker] lines above",
                      action="not restarted: fix the setting it names, then restart the server")
                self._forget_pid()
                self.gave_up.set()
                return
            event(log, "broker_exited", logging.ERROR, code=code, restart_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY[1])

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        """Pass the broker's log lines on, and notice when it is ready."""
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            sys.stderr.write(f"[broker] {line}\n")
            if line:
                self._last_line = line
            if " ready " in f" {line} " or line.endswith(" ready"):
                self.ready.set()

    async def wait_ready(self) -> bool:
        """True once the broker listens; False when it gave up, or after
        READY_TIMEOUT."""
        waits = [asyncio.create_task(self.ready.wait()), asyncio.create_task(self.gave_up.wait())]
        try:
            await asyncio.wait(waits, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self.ready.is_set()

    async def stop(self) -> None:
        """Stop the child and wait for it."""
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            self._forget_pid()
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        self._forget_pid()

    def _forget_pid(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._pidfile.unlink()
