"""A fleet of simulated agents: one or more load generators, driven together.

One load-generator process (``python -m bench.loadgen``) holds at most
``MAX_PER_PROCESS`` agents (the open-file limit is 20,000 per process; each
agent is one socket), so 19,000 agents take two. They share the load
generator's CPU. The publisher (``python -m bench.publisher``, the server's
role) runs as a short-lived process beside them.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.processes import JsonLinesChild, pinned
from bench.procfs import proc_cpu_seconds

MAX_PER_PROCESS = 10_000
PREPARE_TIMEOUT_S = 300.0


def chunks(count: int) -> list[tuple[int, int]]:
    """(first index, count) of each process's agents, as even as possible."""
    processes = math.ceil(count / MAX_PER_PROCESS)
    size = math.ceil(count / processes)
    return [(first, min(size, count - first + 1)) for first in range(1, count + 1, size)]


class Fleet:
    """``count`` agents bench-00001... connected to one broker port."""

    def __init__(self, *, port: int, count: int, pki_dir: Path, work: Path, cpu: int | None,
                 label: str, reconnect: bool = False, phase_timeout: float = 180.0,
                 concurrency: int = 200) -> None:
        self.count = count
        self.phase_timeout = phase_timeout
        self.children: list[JsonLinesChild] = []
        self.agent_timeout = 30.0
        for index, (first, size) in enumerate(chunks(count)):
            command = [sys.executable, "-m", "bench.loadgen", "--port", str(port),
                       "--pki-dir", str(pki_dir), "--count", str(size), "--first", str(first),
                       "--concurrency", str(max(1, concurrency // len(chunks(count)))),
                       "--phase-timeout", str(phase_timeout),
                       "--agent-timeout", str(self.agent_timeout),
                       "--hold", "3600", "--wait-go", "--control", "--fanout"]
            if reconnect:
                command.append("--reconnect")
            self.children.append(JsonLinesChild(
                command, work / f"loadgen-{label}-{index + 1}.log", cpu))

    @property
    def pids(self) -> list[int]:
        """The load generators' process ids."""
        return [child.pid for child in self.children]

    @property
    def command(self) -> str:
        """The first load generator's command line, for the record."""
        return " ".join(self.children[0].command)

    def cpu_s(self) -> float:
        """CPU used so far by all the load generators."""
        return sum(proc_cpu_seconds(pid) for pid in self.pids)

    def prepare(self) -> None:
        """Wait until every process has built its agents' TLS contexts."""
        for child in self.children:
            child.wait_event("prepared", PREPARE_TIMEOUT_S)

    def connect(self) -> dict[str, Any]:
        """Start every connect phase at once; the merged "connected" events."""
        for child in self.children:
            child.send("go")
        timeout = self.phase_timeout + self.agent_timeout + 60
        events = [child.wait_event("connected", timeout) for child in self.children]
        ok = sum(e["ok"] for e in events)
        all_times = [e["time_to_connect_all_s"] for e in events]
        errors: dict[str, int] = {}
        for event in events:
            for reason, n in event["errors"].items():
                errors[reason] = errors.get(reason, 0) + n
        return {
            "ok": ok, "failed": self.count - ok, "errors": errors,
            "time_to_connect_all_s": (max(all_times) if None not in all_times else None),
            "time_to_last_success_s": max((e["time_to_last_success_s"] or 0.0)
                                          for e in events),
            "latency_ms": [e["latency_ms"] for e in events],
            "tls_versions": [e["tls_versions"] for e in events],
        }

    def single(self) -> JsonLinesChild:
        """The only load generator (publish phases need one: its counts are the fleet's)."""
        if len(self.children) != 1:
            raise RuntimeError("this phase needs a fleet in one process")
        return self.children[0]

    def end(self) -> list[dict[str, Any]]:
        """End the hold: every agent sends DISCONNECT; the final reports."""
        for child in self.children:
            child.send("end")
        return [child.wait_event("report", 120) for child in self.children]

    def close(self) -> None:
        """Make sure every process is gone."""
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + 30
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            child.close()


def publish(*, port: int, pki_dir: Path, cpu: int | None, mode: str, args: list[str],
            timeout: float) -> dict[str, Any]:
    """Run the publisher once (pinned like the load generator); its report."""
    command = pinned([sys.executable, "-m", "bench.publisher", "--port", str(port), "--pki-dir",
                      str(pki_dir), "--timeout", str(timeout), mode, *args], cpu)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout + 30, check=False)
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    if not lines or lines[-1].get("event") != "published":
        raise RuntimeError(f"publisher failed ({done.returncode}): {lines or done.stderr[-2000:]}")
    report = dict(lines[-1])
    report["command"] = " ".join(command)
    return report
