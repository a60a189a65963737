"""A TLS-inspecting HTTP CONNECT proxy, as corporate firewalls run them, on 127.0.0.1.

It opens every tunnel (200), then terminates the client's TLS itself with a
certificate for the requested host that its own CA mints on the spot, as
content filters do. It relays nothing onwards: a client that checks the
chain gives up at the handshake, which is what this stand-in is for.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from epns import pki, tls

INSPECTION_CA = "Contoso TLS Inspection CA"


class InterceptingProxy:
    """Start on an ephemeral port; ``close`` stops it and closes every socket."""

    def __init__(self, work: Path, ca_name: str = INSPECTION_CA) -> None:
        self._work = work
        self._ca = pki.create_ca(work, name=ca_name)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.tunnels: list[str] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self) -> str:
        """The proxy URL for agent.toml."""
        return f"http://127.0.0.1:{self.port}"

    def _context(self, host: str) -> ssl.SSLContext:
        with self._lock:
            if host not in self._contexts:
                minted = self._work / f"minted-{len(self._contexts)}"
                minted.mkdir()
                pair = pki.create_broker_cert(self._ca, minted, (host,))
                self._contexts[host] = tls.server_context(pair.cert, pair.key, None)
            return self._contexts[host]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(conn)
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = conn.recv(1)
                if not byte:
                    return
                head += byte
            authority = head.split(b" ")[1].decode()
            self.tunnels.append(authority)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            host = authority.rpartition(":")[0].strip("[]")
            with self._context(host).wrap_socket(conn, server_side=True) as inspected:
                while inspected.recv(4096):
                    pass
        except (OSError, ValueError, IndexError):
            return  # the client refused our certificate, or went away: expected

    def close(self) -> None:
        # shutdown() wakes the blocked accept(), so no connection slips in after.
        self.server.shutdown(socket.SHUT_RDWR)
        self._accepting.join(timeout=5)
        self.server.close()
        with self._lock:
            for conn in self._open:
                conn.close()
        for worker in self._threads:
            worker.join(timeout=5)
