"""A connection flood from one source address, loopback only: what issue 15
measured from outside (about 23,000 attempts in 5 s from one host).

Run as a process of its own (``python -m tests.support.flood``), so the
flood does not share the test's interpreter lock with the clients it hurts.
Two ways to flood, in one loop:

- churn: a non-blocking connect, kept open while ``--hold`` newer ones are
  made, then reset (SO_LINGER 0: no TIME_WAIT eats the source's ports);
- hang: every ``--hang-every``-th connection sends a TLS ClientHello and
  then nothing, and is kept to the end: a handshake left hanging, up to
  ``--hang-max`` of them.

It stops after ``--seconds`` or ``--max-attempts``, whichever comes first,
and prints one JSON line: attempts, hanging handshakes, seconds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import select
import socket
import ssl
import struct
import time

_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_RESET = struct.pack("ii", 1, 0)


def client_hello() -> bytes:
    """The first flight of a TLS client: what the broker answers with a
    ServerHello, a certificate and a signature, then waits on."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _open(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    # The port is chosen at connect, per destination: more of them to use.
    sock.setsockopt(socket.IPPROTO_IP, _NO_PORT, 1)
    sock.bind((source, 0))
    sock.setblocking(False)
    code = sock.connect_ex(("127.0.0.1", port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, errno.errorcode.get(code, "connect"))
    return sock


def _hang(sock: socket.socket, hello: bytes) -> bool:
    """Send the ClientHello once connected; False when it cannot be."""
    poll = select.poll()
    poll.register(sock, select.POLLOUT)
    if not poll.poll(1000) or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        return False
    try:
        return sock.send(hello) == len(hello)
    except OSError:
        return False


def flood(port: int, source: str, seconds: float, hold: int, hang_every: int,
          hang_max: int, max_attempts: int) -> dict[str, float]:
    """The loop described in the module docstring; returns its counts."""
    hello = client_hello()
    recent: collections.deque[socket.socket] = collections.deque()
    hanging: list[socket.socket] = []
    attempts = failures = 0
    start = time.monotonic()
    deadline = start + seconds
    while attempts < max_attempts and time.monotonic() < deadline:
        try:
            sock = _open(source, port)
        except OSError:
            failures += 1
            continue
        attempts += 1
        if hang_every and attempts % hang_every == 0 and len(hanging) < hang_max:
            (hanging if _hang(sock, hello) else recent).append(sock)
        else:
            recent.append(sock)
        while len(recent) > hold:
            recent.popleft().close()
    elapsed = time.monotonic() - start
    for sock in [*recent, *hanging]:
        sock.close()
    return {"attempts": attempts, "failures": failures, "hanging": len(hanging),
            "seconds": round(elapsed, 3), "per_second": round(attempts / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--hold", type=int, default=200)
    parser.add_argument("--hang-every", type=int, default=10)
    parser.add_argument("--hang-max", type=int, default=2_000)
    parser.add_argument("--max-attempts", type=int, default=200_000)
    args = parser.parse_args()
    if not args.source.startswith("127."):
        raise SystemExit("the flood is for loopback only")
    print(json.dumps(flood(args.port, args.source, args.seconds, args.hold, args.hang_every,
                           args.hang_max, args.max_attempts)), flush=True)


if __name__ == "__main__":
    main()
