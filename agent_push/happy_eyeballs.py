"""Dial a host on all its addresses, IPv6 and IPv4 raced (``epns.eyeballs``).

Blocking, for the thread the MQTT dial runs in: non-blocking connects
started ``ATTEMPT_DELAY`` apart (at once after a failure), the first to
complete wins and the others are closed.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from typing import Any

from epns.eyeballs import ATTEMPT_DELAY, interleave

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connected blocking TCP socket; raises the last attempt's ``OSError``
    (``TimeoutError`` when none completed within ``timeout``)."""
    waiting = interleave(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    failure: OSError = TimeoutError(f"no address of {host} answered within {timeout:g} s")
    next_start = 0.0
    try:
        while waiting or selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"TCP {host}:{port} timed out after {timeout:g} s")
            if waiting and (now >= next_start or not selector.get_map()):
                failure = _start(selector, waiting.pop(0)) or failure
                next_start = now + ATTEMPT_DELAY
                continue
            until = deadline if not waiting else min(deadline, next_start)
            for key, _ in selector.select(max(0.0, until - now)):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                selector.unregister(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    sock.setblocking(True)
                    return sock
                sock.close()
                # OSError(errno, ...) is the errno's subclass (PEP 3151):
                # ConnectionRefusedError for ECONNREFUSED, as create_connection raises.
                failure = OSError(code, os.strerror(code))
                next_start = 0.0  # a failed attempt starts the next one at once
        raise failure
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


def _start(selector: selectors.BaseSelector, info: AddrInfo) -> OSError | None:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    code = sock.connect_ex(address)
    if code in (0, errno.EINPROGRESS):
        selector.register(sock, selectors.EVENT_WRITE)
        return None
    sock.close()
    return OSError(code, os.strerror(code))
