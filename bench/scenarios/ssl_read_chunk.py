"""What one kept chunk of TLS data costs: a page, whatever its length.

uvloop reads TLS application data with ``SSLObject.read(256 KiB)`` for a
protocol that is not buffered: CPython allocates 256 KiB (above glibc's mmap
threshold, so a mapping of its own) and shrinks it to the bytes read, which
leaves a whole 4 KiB page per chunk. Dropped at once, as ``MQTTConnection``
does after copying it into its buffer, that costs nothing held; kept, it costs
4 KiB. The one-port ``FrontDoor`` keeps the first chunk (``first``) of a
client that offers no ALPN, and ``ConnectionHub._serve`` keeps the door for
the connection's life (``bench/README.md``, "One port").

This reads 2,000 small records through an in-memory TLS pair, keeps each
chunk as read or as a copy, and prints the RSS per kept chunk.

    python -m bench ssl-read-chunk
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl
from pathlib import Path

from bench.bench_pki import DEFAULT_DIR, ensure_bench_pki
from bench.procfs import proc_status

# uvloop's SSL_READ_MAX_SIZE (uvloop/includes/consts.pxi).
READ_SIZE = 256 * 1024
CHUNKS = 2_000
# A CONNECT-sized record: MQTT's first byte and about what an agent sends.
RECORD = b"\x10" + b"x" * 150


def tls_pair(pki_dir: Path) -> tuple[ssl.SSLObject, ssl.SSLObject, ssl.MemoryBIO,
                                     ssl.MemoryBIO]:
    """A client and a server TLS object over memory, handshake done; and the
    client's outgoing and the server's incoming buffer."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki_dir / "broker.crt", pki_dir / "broker.key")
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(pki_dir / "ca.crt")
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    return client, server, client_out, server_in


def per_chunk(pki_dir: Path, *, copy: bool) -> float:
    """KiB of RSS per kept chunk, kept as read or as a copy."""
    client, server, client_out, server_in = tls_pair(pki_dir)
    kept: list[bytes] = []
    before = proc_status(os.getpid())["rss_kib"]
    for _ in range(CHUNKS):
        client.write(RECORD)
        server_in.write(client_out.read())
        chunk = server.read(READ_SIZE)
        kept.append(bytes(bytearray(chunk)) if copy else chunk)
    return (proc_status(os.getpid())["rss_kib"] - before) / CHUNKS


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench ssl-read-chunk``: print both figures."""
    argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0]).parse_args(argv)
    ensure_bench_pki(DEFAULT_DIR, 1)
    as_read = per_chunk(DEFAULT_DIR, copy=False)
    copied = per_chunk(DEFAULT_DIR, copy=True)
    print(f"{len(RECORD)}-byte chunks read with read({READ_SIZE:,}), {CHUNKS:,} kept: "
          f"{as_read:.2f} KiB RSS each as read, {copied:.2f} KiB each copied")
    return 0

