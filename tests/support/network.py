"""Misbehaving network parts for the route tests: a real HTTP CONNECT proxy
(Debian's tinyproxy) and a listener that black-holes TLS. Loopback only."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port


@dataclass
class Tinyproxy:
    """tinyproxy on 127.0.0.1 with Basic auth."""

    process: subprocess.Popen[bytes]
    port: int
    username: str
    password: str

    def url(self, password: str | None = None) -> str:
        return f"http://{self.username}:{password or self.password}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_tinyproxy(work: Path, username: str = "fleet", password: str = "s3cret",
                    connect_ports: tuple[int, ...] = ()) -> Tinyproxy:
    """Start tinyproxy in the foreground, allowing CONNECT to any port, or
    only to ``connect_ports`` (any other is 403, as a strict proxy answers)."""
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not Path(binary).exists():
        raise RuntimeError("tinyproxy is not installed: run .ci/run or apt-get install tinyproxy")
    port = free_port()
    conf = work / "tinyproxy.conf"
    # Without a ConnectPort line, CONNECT is allowed to every port (8883 and 443 alike).
    allowed = "".join(f"ConnectPort {p}\n" for p in connect_ports)
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\n"
        f"Allow 127.0.0.1\nBasicAuth {username} {password}\nLogLevel Info\n{allowed}"
        f"LogFile \"{work / 'tinyproxy.log'}\"\nPidFile \"{work / 'tinyproxy.pid'}\"\n")
    process = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Tinyproxy(process, port, username, password)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("tinyproxy did not start")


class BlackHole:
    """Accepts TCP and never says a word: what a silently filtering middlebox
    looks like to a TLS client."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        # shutdown() wakes the blocked accept(), so no connection slips in after.
        self.server.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self.server.close()
        for conn in self.accepted:
            conn.close()


class SilentPort:
    """A port whose SYNs are dropped: a listener whose one-slot accept queue is
    full. To a client this is a firewall that drops packets silently: the
    connect times out. Loopback only, no root, no packet filter."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = int(self.server.getsockname()[1])
        # Never accepted: it fills the queue, and the kernel drops the next SYNs.
        self._filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def close(self) -> None:
        self._filler.close()
        self.server.close()


class FreezableRelay:
    """A TCP relay on 127.0.0.1 to ``port``. ``freeze`` makes the connections
    open so far half-open: nothing is forwarded any more, either way, and a
    close on one side is not passed on; it records when the agent next sends
    (its PINGREQ). Connections made afterwards are relayed normally."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._frozen: set[int] = set()
        self._sockets: list[socket.socket] = []
        self._connections = 0
        self.sent_after_freeze: float | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> float:
        self._frozen = set(range(self._connections))
        return time.monotonic()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                agent, _ = self._listener.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [agent, broker]
            number, self._connections = self._connections, self._connections + 1
            threading.Thread(target=self._pump, args=(agent, broker, number, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, agent, number, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, number: int,
              from_agent: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            frozen = number in self._frozen
            if not data:
                if not frozen:
                    sink.close()
                return
            if frozen:
                if from_agent and self.sent_after_freeze is None:
                    self.sent_after_freeze = time.monotonic()
                continue
            try:
                sink.sendall(data)
            except OSError:
                return
