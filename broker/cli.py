"""``epns-broker``: run the embedded broker in the foreground.

    epns-broker [--config broker.toml] [--init-pki]

Settings come from the TOML file and ``EPNS_BROKER_*`` variables. With
``--init-pki`` a development PKI is created in the configured certificate
directory first (existing files are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import uvloop

from broker import runtime
from broker.gc_policy import GCPolicy
from broker.memory import HeapRelease, malloc_trim
from epns import logs, pki
from epns.broker_config import BrokerSettings, load_broker_settings
from epns.errors import EPNSError

log = logging.getLogger(__name__)


async def _run(settings: BrokerSettings) -> None:
    running = await runtime.start(settings)
    # Here and not in runtime.start: gc.freeze() acts on the whole interpreter.
    # With stock settings CPython's collector re-traversed the whole connected
    # fleet while it grew: at 10,000 agents a fifth of the connect CPU, and
    # event-loop stops of up to 1.2 s (docs/benchmark-history.md, "GC tuning").
    collector = GCPolicy(settings.gc)
    collector.start(time.monotonic())
    collector_task = asyncio.create_task(collector.run())
    # A burst of closed connections leaves the C heap's pages resident (docs/memory.md).
    release = HeapRelease(settings.memory, lambda: running.metrics.closed, malloc_trim())
    release_task = asyncio.create_task(release.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logs.event(log, "ready", ports=",".join(f"{k}:{v}" for k, v in running.ports.items()))
    await stop.wait()
    collector_task.cancel()
    release_task.cancel()
    logs.event(log, "stopping")
    await running.stop()
    logs.event(log, "stopped")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``epns-broker``."""
    parser = argparse.ArgumentParser(prog="epns-broker", description="Run the epns broker.")
    parser.add_argument("--config", type=Path, help="broker.toml (optional)")
    parser.add_argument("--init-pki", action="store_true",
                        help="create a dev PKI next to the configured certificate first")
    args = parser.parse_args(argv)
    try:
        settings = load_broker_settings(args.config, os.environ)
        logs.configure(settings.log.level, settings.log.format)
        if args.init_pki:
            names = tuple(dict.fromkeys(("localhost", socket.gethostname(), "127.0.0.1", "::1")))
            pki.init_dev_pki(settings.tls.cert.parent, names)
        _raise_nofile_limit()
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_run(settings))
    except EPNSError as exc:
        sys.stderr.write(f"epns-broker: {exc}\n")
        return 2
    return 0


def _raise_nofile_limit() -> None:
    """Each agent is a file descriptor: use the hard limit, not the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
