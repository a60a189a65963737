"""Scenario 7: the real ``epns-agent`` idle, ``python -m bench agent-idle`` in the background.

It runs in the background while the other scenarios load the machine: its
figures (the agent's RSS, its own CPU, the bytes on its socket) do not depend
on that load, and its two idle windows (600 s each in the full suite) would
not fit in 30 minutes otherwise. Its brokers are its own, on other ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import ROOT


class AgentIdle:
    """``python -m bench agent-idle`` as a background process."""

    def __init__(self, *, duration: float, brokers: list[str], pki_dir: Path, work: Path,
                 mosquitto: str) -> None:
        self.duration = duration
        self.command = [sys.executable, "-m", "bench", "agent-idle", "--duration",
                        str(duration), "--brokers", *brokers, "--pki-dir", str(pki_dir),
                        "--work-dir", str(work), "--mosquitto", mosquitto]
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "agent-idle.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=stderr,
                                            start_new_session=True)

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for it (bounded); its results file, read back."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return {"error": f"agent-idle did not finish in {timeout:g} s; see {self.log}"}
        match = re.search(r"^Results: (\S+)$", out.decode(), re.MULTILINE)
        if match is None:
            return {"error": f"agent-idle exited {self.process.returncode} without results; "
                             f"see {self.log}"}
        data: dict[str, Any] = json.loads((ROOT / match.group(1)).read_text())
        data["results_file"] = match.group(1)
        return data

    def stop(self) -> None:
        """SIGINT (its ``finally`` blocks stop its agent and broker), bounded
        wait, then SIGKILL to its whole process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
