"""What running an HTTP sync's exchange in a child process costs, per sync.

The agent runs each HTTP sync's exchange (POST, then GET) in a short-lived
child, ``python -m agent_push.http_exchange``, so that httpx and its stack never
stay in its memory. This measures, against the test suite's HTTPS stand-in for
the management server on 127.0.0.1 (the agent_idle PKI, mTLS), one after the
other in one process:

- ``child``: ``HttpSync`` as the agent runs it, child start included;
- ``in-process``: the same exchange (``http_exchange.exchange``) awaited in
  this process with httpx already imported, as the agent did before: the
  first of these pays httpx's import, the others do not.

The added latency of a sync is ``child`` minus warm ``in-process``. CPU per
sync is this process's main thread (where the agent's event loop would run;
the stand-in server has threads of its own) plus the children it collected.

    /tmp/venv/bin/python bench/sync_latency.py            # 30 syncs each
    /tmp/venv/bin/python bench/sync_latency.py --count 100
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent_idle import AGENT_ID, ensure_pki, start_sync_server
from bench_pki import DEFAULT_DIR

from agent_push import sync
from agent_push.http_exchange import ExchangeJob, exchange
from agent_push.sync import HttpSync, SyncRequest, TlsFiles
from epns import pki
from epns.agent_config import SyncSettings
from epns.sync_contract import SyncFormat, SyncReason, SyncReport, encode_report, sync_path


def _request() -> SyncRequest:
    return SyncRequest(SyncReason.MANUAL, (), time.time())


def _cpu() -> float:
    """CPU seconds of the main thread and of the collected children so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


async def _timed(run: Callable[[], Awaitable[str | None]], count: int
                 ) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``count`` runs; a run returns an error or None."""
    samples = []
    for _ in range(count):
        began, cpu = time.perf_counter(), _cpu()
        error = await run()
        if error is not None:
            raise RuntimeError(error)
        samples.append((time.perf_counter() - began, _cpu() - cpu))
    return samples


def _job(url: str, tls: TlsFiles) -> ExchangeJob:
    """The job HttpSync hands its child, for the in-process runs."""
    report = SyncReport(AGENT_ID, "bench", time.time(), SyncReason.MANUAL, (),
                        {"hostname": "bench"})
    return ExchangeJob(url=url + sync_path(AGENT_ID), server=url, format="json",
                       body=encode_report(report, SyncFormat.JSON), fetch=True,
                       ca=str(tls.ca), cert=str(tls.cert), key=str(tls.key), token=None,
                       proxy_url=None, timeout=10.0, max_retries=5, max_retry_after=300.0,
                       log_level="info", log_format="text")


def _row(name: str, samples: list[tuple[float, float]]) -> str:
    ms = [wall * 1000 for wall, _ in samples]
    rest = ms[1:] or ms
    cpu = statistics.median(c * 1000 for _, c in samples[1:] or samples)
    return (f"| {name} | {ms[0]:.0f} | {statistics.median(rest):.0f} | "
            f"{statistics.quantiles(rest, n=10)[-1]:.0f} | {min(rest):.0f} | {cpu:.0f} |")


def main(argv: list[str] | None = None) -> int:
    """Run the syncs and print a markdown table of their durations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="syncs of each kind")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    pair = ensure_pki(args.pki_dir)
    server = start_sync_server(args.pki_dir)
    try:
        settings = SyncSettings(url=server.url, fetch=True, timeout=10.0)
        tls = TlsFiles(args.pki_dir / pki.CA_CERT, pair.cert, pair.key)
        http = HttpSync(settings, AGENT_ID, tls, changes=lambda: {"hostname": "bench"})
        job = _job(server.url, tls)

        async def in_child() -> str | None:
            outcome = await http(SyncRequest(SyncReason.MANUAL, (), time.time()))
            return None if outcome.ok else outcome.detail

        async def in_process() -> str | None:
            return (await exchange(job)).error

        child = asyncio.run(_timed(in_child, args.count))
        inline = asyncio.run(_timed(in_process, args.count))
    finally:
        server.close()
    print(f"Command: `{sys.executable} bench/sync_latency.py --count {args.count}` "
          f"(child: {' '.join(sync.EXCHANGE_CHILD[1:])})\n")
    print("| sync (POST + GET, mTLS, 127.0.0.1) | first (ms) | median of the others (ms) "
          "| p90 (ms) | min (ms) | CPU, median (ms) |")
    print("|---|---|---|---|---|---|")
    print(_row("exchange in a child (the agent now)", child))
    print(_row("exchange in process (the agent before)", inline))
    added = [statistics.median(x[i] for x in child[1:]) - statistics.median(
        x[i] for x in inline[1:]) for i in (0, 1)]
    print(f"\nAdded per sync (medians): {added[0] * 1000:.0f} ms of latency, "
          f"{added[1] * 1000:.0f} ms of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
