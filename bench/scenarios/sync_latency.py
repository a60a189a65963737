"""What one HTTP sync costs the agent: wall time and CPU, one sync after another.

The agent runs each HTTP sync's exchange (POST, then GET) in its own process,
with h11 on asyncio streams (``agent_push.http_exchange``). This times
``HttpSync`` as the agent runs it, against the test suite's HTTPS stand-in for
the management server on 127.0.0.1 (the agent_idle PKI, mTLS), ``--count``
syncs one after the other in one process. CPU per sync is this process's main
thread, where the agent's event loop would run (the stand-in server has
threads of its own), plus any children it collected (none now; the exchange
used to run in one).

    python -m bench sync-latency            # 30 syncs
    python -m bench sync-latency --count 100
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path

from agent_push.sync import HttpSync, SyncRequest, TlsFiles
from bench.bench_pki import DEFAULT_DIR, ensure_named_agent
from bench.results_io import command_line
from bench.scenarios.agent_idle import AGENT_ID, start_sync_server
from epns import pki
from epns.agent_config import SyncSettings
from epns.sync_contract import SyncReason


def _cpu() -> float:
    """CPU seconds of the main thread and of the collected children so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


async def _timed(http: HttpSync, count: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``count`` syncs; a failed one stops the run."""
    samples = []
    for _ in range(count):
        began, cpu = time.perf_counter(), _cpu()
        outcome = await http(SyncRequest(SyncReason.MANUAL, (), time.time()))
        if not outcome.ok:
            raise RuntimeError(outcome.detail)
        samples.append((time.perf_counter() - began, _cpu() - cpu))
    return samples


def _row(name: str, samples: list[tuple[float, float]]) -> str:
    ms = [wall * 1000 for wall, _ in samples]
    rest = ms[1:] or ms
    cpu = statistics.median(c * 1000 for _, c in samples[1:] or samples)
    return (f"| {name} | {ms[0]:.0f} | {statistics.median(rest):.0f} | "
            f"{statistics.quantiles(rest, n=10)[-1]:.0f} | {min(rest):.0f} | {cpu:.0f} |")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench sync-latency``: run the syncs, print a markdown table of
    their durations."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="syncs")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    pair = ensure_named_agent(args.pki_dir, AGENT_ID)
    server = start_sync_server(args.pki_dir)
    try:
        settings = SyncSettings(url=server.url, fetch=True, timeout=10.0)
        tls = TlsFiles(args.pki_dir / pki.CA_CERT, pair.cert, pair.key)
        http = HttpSync(settings, AGENT_ID, tls, changes=lambda: {"hostname": "bench"})
        samples = asyncio.run(_timed(http, args.count))
    finally:
        server.close()
    print(f"Command: `{command_line()}`\n")
    print("| sync (POST + GET, mTLS, 127.0.0.1) | first (ms) | median of the others (ms) "
          "| p90 (ms) | min (ms) | CPU, median (ms) |")
    print("|---|---|---|---|---|---|")
    print(_row("HttpSync, in the agent's process", samples))
    return 0

