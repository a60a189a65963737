"""A helper process (load generator, publisher) that answers in JSON lines on stdout.

Started in its own process group, pinned to a CPU if asked, with stdin kept
open for commands; every wait for an event is bounded in time.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from brokers import pinned


class JsonLinesChild:
    """A child process whose stdout is JSON lines, one event each."""

    def __init__(self, command: list[str], log: Path, cwd: Path, cpu: int | None) -> None:
        self.command = command
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(pinned(command, cpu), cwd=cwd,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr, start_new_session=True)
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Read stdout until the JSON line of event ``name``; bounded in time."""
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                event = json.loads(line)
                if event.get("event") == name:
                    return dict(event)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.log.stem} sent no {name!r} event in {timeout:g} s")
            if self._selector.select(timeout=min(remaining, 1.0)):
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{self.log.stem} exited before {name!r}; see {self.log}")
                self._buffer += chunk

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
