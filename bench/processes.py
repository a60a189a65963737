"""The processes a benchmark starts: CPU pinning, the open-file limit, waiting
for a log line, stopping, and helper processes that answer in JSON lines.

A helper (load generator, publisher, e2e agents) is started in its own process
group, pinned to a CPU if asked, with stdin kept open for commands; every wait
for an event is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

from bench import ROOT

STOP_TIMEOUT_S = 30.0


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on one CPU (through taskset, which execs it, so the pid
    stays the program's), so broker and load generator do not steal each
    other's core. The open-file limit needs nothing here: main() raised the
    soft limit to the hard one and children inherit it."""
    if cpu is None:
        return command
    return ["taskset", "--cpu-list", str(cpu), *command]


def can_pin(wanted: bool) -> bool:
    """Whether to pin the broker (CPU 0) and its helpers (CPU 1): asked for,
    two CPUs at least, and taskset installed."""
    return wanted and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def raise_nofile_limit() -> None:
    """Each agent is a socket: use the hard open-file limit, not the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_for_line(path: Path, pattern: str, process: subprocess.Popen[bytes],
                  timeout: float) -> re.Match[str]:
    """Poll a log file until a line matches; fail if the process exits first."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = regex.search(text)
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
    raise RuntimeError(f"no line matching {pattern!r} in {path}:\n{tail}")


def stop_process(process: subprocess.Popen[Any],
                 timeout: float = STOP_TIMEOUT_S) -> dict[str, Any]:
    """SIGTERM, wait up to ``timeout``, SIGKILL past it: how long it took,
    the exit code, and whether it had to be killed."""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=timeout)
        killed = False
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
        killed = True
    return {"seconds": round(time.monotonic() - started, 2), "exit_code": code,
            "killed_after_timeout": killed}


class JsonLinesChild:
    """A helper process whose stdout is JSON lines, one event each, started
    from the repository root (so ``python -m bench.<module>`` finds the package)."""

    def __init__(self, command: list[str], log: Path, cpu: int | None) -> None:
        self.command = command
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(pinned(command, cpu), cwd=ROOT,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr, start_new_session=True)
        self._buffer = b""
        self.pending: deque[dict[str, Any]] = deque()
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def read(self, timeout: float) -> None:
        """Wait up to ``timeout`` for output; parse its complete lines into
        ``pending`` (events not asked for yet stay there)."""
        assert self.process.stdout is not None
        if self._selector.select(timeout=timeout):
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.log.stem} exited; see {self.log}")
            self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.pending.append(dict(json.loads(line)))

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Read stdout until the JSON line of event ``name``; bounded in time.
        Events before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                event = self.pending.popleft()
                if event.get("event") == name:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.log.stem} sent no {name!r} event in {timeout:g} s")
            self.read(min(remaining, 1.0))

    def send(self, line: str) -> None:
        """One command line on the child's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def terminate(self) -> None:
        """SIGTERM, if it still runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Make sure the process (and its group) is gone."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._selector.close()
        if self.process.stdin is not None:
            self.process.stdin.close()
        if self.process.stdout is not None:
            self.process.stdout.close()

