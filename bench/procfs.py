"""Readings from /proc: a process's CPU and memory, the machine's CPU and TCP counters.

All benchmark figures about processes come from here: utime + stime (all
threads) from ``/proc/PID/stat``, VmRSS/VmHWM from ``/proc/PID/status``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/PID/stat line after the command name (which may
    contain spaces; the fields after it are fixed): utime is [11]."""
    return stat[stat.rindex(")") + 2:].split()


def proc_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat; with
    ``reaped_children``, the cutime + cstime of the children it waited for too."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat").read_text())
    return sum(int(v) for v in fields[11:15 if reaped_children else 13]) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (all its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def every_process() -> dict[int, tuple[str, float, float]]:
    """Every process's command line (shortened), CPU seconds so far and when
    it started (seconds after boot). Reaped children's CPU is left out: it
    lands in the parent at once, however long the child ran, so the CPU of a
    process that ends during a phase is attributed to no one."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                name = " ".join(a.decode(errors="replace") for a in argv[:4])[:100]
                fields = _stat_fields((entry / "stat").read_text())
                found[int(entry.name)] = (name, sum(int(v) for v in fields[11:13]) / CLOCK_TICKS,
                                          int(fields[19]) / CLOCK_TICKS)
    return found


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile in KiB, and the thread count, from
    /proc/PID/status."""
    wanted = {"VmRSS": "rss_kib", "VmHWM": "hwm_kib", "RssAnon": "rss_anon_kib",
              "RssFile": "rss_file_kib", "Threads": "threads"}
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            values[wanted[key]] = int(value.split()[0])
    return values


def system_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all CPUs, from /proc/stat. Busy is user,
    kernel and interrupt time: depending on the kernel's accounting, loopback
    softirq work is charged to the process or only here. Steal is time the
    hypervisor gave to other guests: on a VM it slows everything down."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def tcp_counters() -> dict[str, int]:
    """Listen-queue overflows and SYN retransmissions (whole network namespace)
    from /proc/net/netstat: a client whose SYN overflowed the broker's accept
    queue retries after 1 s, which shows up as a latency tail."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    wanted = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return {name: int(table.get(name, 0)) for name in wanted}
    return {}


@dataclass
class Sample:
    """The broker at one instant, and how much CPU everything else had used."""

    at: float
    cpu_s: float
    rss_kib: int
    # CPU of every process but the broker, the helpers and this one:
    # another job on the machine shows up here and flags the run.
    others_cpu_s: float
    steal_s: float

    @classmethod
    def take(cls, pid: int, *helper_pids: int | None) -> Sample:
        """Read /proc now; ``helper_pids`` (load generators, publisher) are the
        benchmark's own, not noise."""
        busy, steal = system_cpu_seconds()
        cpu = proc_cpu_seconds(pid)
        ours = cpu + proc_cpu_seconds(os.getpid())
        for helper in helper_pids:
            if helper is not None:
                ours += proc_cpu_seconds(helper)
        return cls(time.monotonic(), cpu, proc_status(pid)["rss_kib"], busy - ours, steal)


def others_pct(a: Sample, b: Sample) -> float:
    """CPU % (of one core) used by other processes between two samples."""
    return round(100 * (b.others_cpu_s - a.others_cpu_s) / (b.at - a.at), 1)


def steal_pct(a: Sample, b: Sample) -> float:
    """CPU % (of one core) stolen by the hypervisor between two samples."""
    return round(100 * (b.steal_s - a.steal_s) / (b.at - a.at), 1)
