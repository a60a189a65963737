"""Handshakes left hanging: does the broker's memory come back after the burst?

Issue 15, item 4. A client opens TCP and sends nothing, half a ClientHello, or a
whole ClientHello and then nothing; the server closes it at its handshake
timeout. ``--rounds`` rounds of ``--count`` such connections (a third of each
kind, from ``--sources`` loopback addresses in turn): each round waits until
the server has closed them all, or ``--timeout`` + 1 s (Mosquitto has no
handshake timeout: the client closes them then), and closes what is left.
Then ``--settle`` seconds idle. The server's RSS (``/proc/PID/status``) and its
brk heap (``/proc/PID/smaps``) before, the peak (VmHWM) and after, for:

- ``epns``: the broker (``tls_handshake_timeout`` = ``--timeout``, admission
  lifted as in the other benchmarks), memory release at its defaults;
- ``epns-no-release``: the same with ``memory.release_after_closes = 0``, the
  broker before the fix (glibc's own policy);
- ``mosquitto``: Mosquitto's 8883 listener as ``bench.brokers`` starts it;
- ``uvloop``: the control, a 30-line uvloop TLS server with the broker's TLS
  context, ``ssl_handshake_timeout`` and nothing else.

    python -m bench handshake-exhaustion               # 10 x 500, about 100 s
    python -m bench handshake-exhaustion --targets epns mosquitto

Loopback only (127.0.0.1 and ``--sources`` in 127.0.0.0/8); every wait is
bounded, every process stopped at the end. Results:
``bench/results/handshake-exhaustion-<timestamp>.json``. The finding is in
docs/memory.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import ROOT
from bench.bench_pki import DEFAULT_DIR, ensure_bench_pki
from bench.brokers import MOSQUITTO, log_summary, start_epns, start_mosquitto
from bench.processes import raise_nofile_limit, stop_process
from bench.procfs import proc_status
from bench.results_io import fmt, machine_line, mib, run_record, save_and_print
from epns import pki, tls

TARGETS = ("epns", "epns-no-release", "mosquitto", "uvloop")
# What each hanging client sends before it goes silent, in turn.
PAYLOADS = ("nothing", "half a ClientHello", "a ClientHello")
# Past the server's handshake timeout, the client stops waiting for it.
GRACE_S = 1.0


def client_hello() -> bytes:
    """A TLS client's first flight, as Python's ssl sends it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_object = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls_object.do_handshake()
    return outgoing.read()


def heap_rss_kib(pid: int) -> int:
    """Resident KiB of the process's brk heap (the ``[heap]`` mapping of
    /proc/PID/smaps), where glibc's main arena lives."""
    in_heap = False
    total = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            in_heap = fields[-1] == "[heap]"
        elif in_heap and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@dataclass
class Round:
    """One round of hanging handshakes, as the client saw it."""

    opened: int
    closed_by_server: int
    seconds: float


def hang(port: int, count: int, sources: list[str], wait: float,
         on_tick: Callable[[], None] | None = None) -> Round:
    """Open ``count`` connections to 127.0.0.1:``port`` (from ``sources`` in
    turn), each sending ``PAYLOADS[i % 3]`` and then nothing; wait up to
    ``wait`` seconds for the server to close them (what it sends is read and
    dropped); close the rest. ``on_tick`` runs about every 0.2 s meanwhile."""
    hello = client_hello()
    payloads = (b"", hello[:len(hello) // 2], hello)
    started = time.monotonic()
    selector = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    closed = 0
    try:
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                            source_address=(sources[index % len(sources)], 0))
            opened.append(sock)
            sock.sendall(payloads[index % len(payloads)])
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = started + wait
        pending = len(opened)
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    closed += 1
                    pending -= 1
            if on_tick is not None:
                on_tick()
    finally:
        selector.close()
        for sock in opened:
            sock.close()
    return Round(len(opened), closed, round(time.monotonic() - started, 2))


def measure(pid: int, port: int, args: argparse.Namespace, wait: float) -> dict[str, Any]:
    """The rounds and the settle against the server ``pid`` on ``port``; its memory."""
    time.sleep(1.0)
    before = proc_status(pid)
    heap_before = heap_rss_kib(pid)
    samples: list[int] = []

    def sample() -> None:
        samples.append(proc_status(pid)["rss_kib"])

    rounds = []
    started = time.monotonic()
    for number in range(args.rounds):
        done = hang(port, args.count, args.sources, wait, sample)
        rounds.append(done.__dict__)
        print(f"   round {number + 1}: {done.closed_by_server}/{done.opened} closed by the "
              f"server in {done.seconds} s, RSS {mib(proc_status(pid)['rss_kib']):.1f} MiB",
              file=sys.stderr, flush=True)
    rounds_s = time.monotonic() - started
    settle_end = time.monotonic() + args.settle
    while time.monotonic() < settle_end:
        time.sleep(0.5)
        sample()
    after = proc_status(pid)
    return {
        "rss_before_kib": before["rss_kib"], "rss_peak_kib": after["hwm_kib"],
        "rss_after_kib": after["rss_kib"],
        "after_over_before": round(after["rss_kib"] / before["rss_kib"], 3),
        "heap_before_kib": heap_before, "heap_after_kib": heap_rss_kib(pid),
        "handshakes": sum(r["opened"] for r in rounds),
        "closed_by_server": sum(r["closed_by_server"] for r in rounds),
        "rounds_s": round(rounds_s, 1), "rounds": rounds,
        "rss_samples_kib": samples[::5],
    }


class Control:
    """The uvloop control server, a process of its own (``--serve-control``)."""

    def __init__(self, pki_dir: Path, timeout: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench", "handshake-exhaustion", "--serve-control",
             str(timeout), "--pki-dir", str(pki_dir)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        """Close its stdin (it exits), bounded."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        stop_process(self.process, timeout=10)


async def serve_control(pki_dir: Path, timeout: float) -> None:
    """The control: listen, print the port, drop handshakes after ``timeout``,
    until stdin closes."""
    context = tls.server_context(pki_dir / pki.BROKER_CERT, pki_dir / pki.BROKER_KEY,
                                 pki_dir / pki.CA_CERT)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=context,
                                      backlog=4096, ssl_handshake_timeout=timeout)
    sys.stdout.write(f"{server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await loop.run_in_executor(None, sys.stdin.read)


def run_target(target: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start one server, measure it, stop it."""
    print(f"## {target}: {args.rounds} x {args.count} hanging handshakes",
          file=sys.stderr, flush=True)
    wait = args.timeout + GRACE_S
    if target == "uvloop":
        control = Control(args.pki_dir, args.timeout)
        try:
            return {"target": target, **measure(control.process.pid, control.port, args, wait)}
        finally:
            control.stop()
    if target == "mosquitto":
        broker = start_mosquitto(args.pki_dir, work, None, args.mosquitto,
                                 log_name=f"{target}.log")
    else:
        settings = {"LIMITS__TLS_HANDSHAKE_TIMEOUT": str(args.timeout),
                    # One address may hold 500 handshakes (admission); the rounds are
                    # spread over --sources addresses, this lifts it for any --count.
                    "LIMITS__SOURCE_HANDSHAKES": "100000",
                    "LOG__LEVEL": "info"}
        if target == "epns-no-release":
            settings["MEMORY__RELEASE_AFTER_CLOSES"] = "0"
        broker = start_epns(args.pki_dir, work, None, log_name=f"{target}.log",
                            settings=settings)
    try:
        result = {"target": target, **measure(broker.pid, broker.port, args, wait)}
        if broker.kind == "epns":
            result["memory_released_lines"] = [
                line.split(" memory_released ", 1)[1]
                for line in broker.log.read_text(errors="replace").splitlines()
                if " memory_released " in line]
        result["log"] = log_summary(broker)
        return result
    finally:
        broker.stop()


def markdown(data: dict[str, Any]) -> str:
    """The table for bench/README.md."""
    settings = data["settings"]
    lines = [f"{settings['rounds']} rounds x {settings['count']:,} hanging handshakes "
             f"(handshake timeout {settings['timeout_s']:g} s), then {settings['settle_s']:g} s "
             "idle; RSS of the server process, MiB", "",
             "| server | before | peak | after | after / before | brk heap before -> after "
             "| closed by the server |", "|---|---|---|---|---|---|---|"]
    for run in data["runs"]:
        lines.append(
            f"| {run['target']} | {fmt(mib(run['rss_before_kib']))} "
            f"| {fmt(mib(run['rss_peak_kib']))} | {fmt(mib(run['rss_after_kib']))} "
            f"| {run['after_over_before']:.2f} | {fmt(mib(run['heap_before_kib']))} -> "
            f"{fmt(mib(run['heap_after_kib']))} "
            f"| {fmt(run['closed_by_server'])} / {fmt(run['handshakes'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench handshake-exhaustion``: the table; with
    ``--serve-control`` be the control server."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", type=int, default=500, help="hanging handshakes per round")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="the servers' TLS handshake timeout, seconds")
    parser.add_argument("--settle", type=float, default=7.0,
                        help="idle seconds after the rounds (epns releases within 6 s)")
    parser.add_argument("--sources", type=int, default=10,
                        help="client addresses, 127.0.2.1 up")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-work"))
    parser.add_argument("--mosquitto", default=MOSQUITTO)
    parser.add_argument("--serve-control", type=float, metavar="TIMEOUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_control is not None:
        uvloop.run(serve_control(args.pki_dir, args.serve_control))
        return 0
    if not 1 <= args.sources <= 254 or args.count < 1 or args.rounds < 1:
        parser.error("--sources 1 to 254, --count and --rounds at least 1")
    args.sources = [f"127.0.2.{number}" for number in range(1, args.sources + 1)]
    raise_nofile_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.work_dir / f"handshake-exhaustion-{stamp}"
    work.mkdir(parents=True)
    ensure_bench_pki(args.pki_dir, 1)
    data: dict[str, Any] = {
        **run_record(args.mosquitto),
        "settings": {"rounds": args.rounds, "count": args.count, "timeout_s": args.timeout,
                     "settle_s": args.settle, "sources": args.sources, "payloads": PAYLOADS,
                     "client_wait_s": args.timeout + GRACE_S, "work_dir": str(work)},
        "runs": [],
    }
    for target in args.targets:
        data["runs"].append(run_target(target, args, work))
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_and_print(data, f"handshake-exhaustion-{stamp}", markdown(data))
    machine = data["machine"]
    print(f"\nMachine (README format): {machine_line(machine)}; uncommitted changes in the "
          f"tree: {'yes' if machine['dirty'] else 'no'}")
    return 0
