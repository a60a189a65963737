"""TLS memory per connection: what one TLS connection costs a server process.

The broker issue asks for TLS memory below 80 KiB per connection, where
CPython's asyncio TLS allocates a 256 KiB buffer for each. This isolates that
cost from amqtt: a server process with a do-nothing protocol holds N
connections, once over plain TCP and once over TLS with the broker's own
context (``epns.tls.server_context``: TLS >= 1.2, ECDSA P-256, client
certificate required). RSS growth per connection is read from /proc; the TLS
cost is the difference between the two. It is measured under uvloop (what the
broker runs on) and under stock asyncio.

    python -m bench tls-memory              # N = 2000
    python -m bench tls-memory --count 5000

All traffic is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import ROOT
from bench.bench_pki import DEFAULT_DIR, agent_id, ensure_bench_pki
from bench.processes import raise_nofile_limit
from bench.procfs import proc_status
from epns import pki, tls


class Holder(asyncio.Protocol):
    """Keeps the connection open; answers the client's one byte with one byte."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; keep it duck-typed.
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"!")


async def serve(pki_dir: Path, use_tls: bool) -> None:
    """The server process (``--serve``): listen, print the port, hold
    connections until stdin closes."""
    context = None
    if use_tls:
        context = tls.server_context(pki_dir / pki.BROKER_CERT, pki_dir / pki.BROKER_KEY,
                                     pki_dir / pki.CA_CERT)
    server = await asyncio.get_running_loop().create_server(
        Holder, "127.0.0.1", 0, ssl=context, backlog=4096)
    sys.stdout.write(f"{server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def open_connections(port: int, contexts: list[ssl.SSLContext | None]
                           ) -> list[asyncio.StreamWriter]:
    """Open one connection per context, 100 at a time; each exchanges one byte."""
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(100)

    async def one(context: ssl.SSLContext | None) -> None:
        async with gate:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=context,
                server_hostname="127.0.0.1" if context else None), timeout=30)
            writer.write(b"?")
            await asyncio.wait_for(reader.readexactly(1), timeout=30)
            writers.append(writer)

    await asyncio.gather(*(one(context) for context in contexts))
    return writers


def client_contexts(pki_dir: Path, count: int) -> list[ssl.SSLContext]:
    """One client context per simulated agent, each with its own certificate."""
    contexts = []
    for index in range(count):
        pair = pki.agent_pair(pki_dir, agent_id(index + 1))
        context = ssl.create_default_context(cafile=str(pki_dir / pki.CA_CERT))
        context.load_cert_chain(str(pair.cert), str(pair.key))
        contexts.append(context)
    return contexts


def measure(pki_dir: Path, loop: str, use_tls: bool, count: int) -> float:
    """KiB of server RSS per held connection."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench", "tls-memory", "--serve", loop, "--pki-dir", str(pki_dir)]
        + (["--tls"] if use_tls else []),
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        contexts: list[ssl.SSLContext | None] = (
            list(client_contexts(pki_dir, count)) if use_tls else [None] * count)
        time.sleep(0.5)
        before = proc_status(server.pid)["rss_kib"]

        async def run() -> float:
            writers = await open_connections(port, contexts)
            await asyncio.sleep(1.0)
            after = proc_status(server.pid)["rss_kib"]
            for writer in writers:
                writer.close()
            return (after - before) / len(writers)

        return uvloop.run(run())
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench tls-memory``: print the table; with ``--serve``, be
    the server process of one measurement."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--serve", choices=["uvloop", "asyncio"])
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    if args.serve:
        runner = uvloop.run if args.serve == "uvloop" else asyncio.run
        runner(serve(args.pki_dir, args.tls))
        return 0
    ensure_bench_pki(args.pki_dir, args.count)
    sys.stdout.write(f"N = {args.count} connections, server RSS growth per connection (KiB)\n\n")
    sys.stdout.write("| event loop | plain TCP | TLS | TLS cost |\n|---|---|---|---|\n")
    for loop in ("uvloop", "asyncio"):
        plain = measure(args.pki_dir, loop, False, args.count)
        secure = measure(args.pki_dir, loop, True, args.count)
        sys.stdout.write(f"| {loop} | {plain:.1f} | {secure:.1f} | {secure - plain:.1f} |\n")
        sys.stdout.flush()
    return 0

