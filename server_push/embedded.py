"""The all-in-one default: the server runs the embedded broker as a child
process (``python -m broker``), restarts it if it dies, and stops it on exit.

A child process, not an import: the broker and the server stay independent
packages, and the broker keeps its own event loop and GC policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from epns.logs import event

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
RESTART_DELAY = (1.0, 30.0)


class EmbeddedBroker:
    """Supervises one ``epns-broker`` child; ``ready`` is set while it serves."""

    def __init__(self, config: Path | None) -> None:
        self._config = config
        self._process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self._stopping = False

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "broker", "--init-pki"]
        if self._config is not None:
            argv += ["--config", str(self._config)]
        return argv

    async def run(self) -> None:
        """Start the broker and keep it running until ``stop``."""
        delay = RESTART_DELAY[0]
        while not self._stopping:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv(), stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            event(log, "broker_started", pid=self._process.pid)
            await self._relay(self._process)
            code = await self._process.wait()
            self.ready.clear()
            if self._stopping:
                break
            event(log, "broker_exited", logging.ERROR, code=code, restart_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY[1])

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        """Pass the broker's log lines on, and notice when it is ready."""
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            sys.stderr.write(f"[broker] {line}\n")
            if " ready " in f" {line} " or line.endswith(" ready"):
                self.ready.set()

    async def wait_ready(self) -> bool:
        """True once the broker listens; False after READY_TIMEOUT."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT)
        return self.ready.is_set()

    async def stop(self) -> None:
        """Stop the child and wait for it."""
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
