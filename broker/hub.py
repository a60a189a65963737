"""The broker's front door: accept, admit, layer TLS on, hand to amqtt.

amqtt's own listeners run the TLS handshake before the broker sees the client,
make connections over the limit wait on a semaphore, and never drop a silent
client. The hub instead:

- counts and rate-limits raw TCP connections and closes the excess at once,
  before any TLS work (``broker.admission``);
- bounds the TLS handshake;
- drops a client silent for ``keepalive_factor`` times its keep-alive;
- re-reads the revocation file and closes connections it now revokes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import websockets.asyncio.server as ws_server
from amqtt.adapters import WebSocketsReader, WebSocketsWriter

from broker.admission import AdmissionGate
from broker.connection import MQTTConnection
from broker.fleet_broker import FleetBroker
from broker.front_door import FrontDoor, OnePort, one_port_context, relay
from broker.idle import IdleWatch
from broker.metrics import Metrics
from broker.plugins import identity_of
from broker.revocation import RevocationFile
from epns.broker_config import LimitSettings
from epns.logs import event
from epns.one_port import Kind

log = logging.getLogger(__name__)

_SWEEP_INTERVAL = 1.0
# During a storm, say how many were refused once a second, not once each.
_REFUSAL_LOG_INTERVAL = 1.0


class ConnectionHub:
    """Owns every client socket of the mqtts listeners."""

    def __init__(self, broker: FleetBroker, limits: LimitSettings, metrics: Metrics,
                 revocations: RevocationFile, revocation_interval: float) -> None:
        self.broker = broker
        self.limits = limits
        self.metrics = metrics
        self.revocations = revocations
        self._revocation_interval = revocation_interval
        self.max_packet_size = limits.max_packet_size
        self.gate = AdmissionGate(limits.max_connections, limits.connect_rate,
                                  limits.connect_burst, time.monotonic())
        self._connections: set[MQTTConnection] = set()
        self._idle: IdleWatch[MQTTConnection] = IdleWatch()
        self._contexts: dict[str, ssl.SSLContext] = {}
        # One-port listeners: where their HTTPS goes.
        self._one_ports: dict[str, OnePort] = {}
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused_since_log = 0
        self._refusal_logged_at = 0.0
        self._acceptors: list[asyncio.Task[None]] = []
        self._periodic: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the keep-alive sweep and the revocation watch. They serve every
        listener, the WebSocket one included, so they do not wait for listen()."""
        self._periodic = [asyncio.create_task(self._sweep_forever()),
                          asyncio.create_task(self._watch_revocations())]

    async def listen(self, name: str, host: str, port: int, context: ssl.SSLContext,
                     one_port: OnePort | None = None) -> int:
        """Open an mqtts listener; returns the bound port (useful with port 0).
        With ``one_port`` it is a one-port listener (``broker.front_door``)."""
        if one_port is not None:
            context = one_port_context(context)
            self._one_ports[name] = one_port
        self._contexts[name] = context
        # "::" is every address of both families (IPv6-only and IPv4-only
        # networks alike); a specific address is that one only.
        sock = socket.create_server((host, port), family=_family(host), backlog=4096,
                                    reuse_port=False, dualstack_ipv6=host == "::")
        sock.setblocking(False)
        self._sockets.append(sock)
        self._acceptors.append(asyncio.create_task(self._accept_forever(name, sock)))
        bound: int = sock.getsockname()[1]
        return bound

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_forever(self, name: str, listener: socket.socket) -> None:
        """Accept raw sockets; admit them or close them before any TLS work."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                event(log, "accept_failed", logging.ERROR, listener=name, error=str(exc))
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            refusal = self.gate.admit(now)
            if refusal is not None:
                self.metrics.refusals[refusal.value] += 1
                self._log_refusal(refusal.value, address, now)
                sock.close()
                continue
            conn = MQTTConnection(self, name, time.monotonic)
            conn.peer = (_unmapped(str(address[0])), int(address[1]))
            self._connections.add(conn)
            self.metrics.connections[name] += 1
            self._spawn(self._serve(conn, sock))

    async def serve_websocket(self, name: str, connection: ws_server.ServerConnection,
                              writer: WebSocketsWriter | None = None) -> None:
        """One MQTT-over-WebSocket client of listener ``name``, admitted and
        counted as a TCP one is; ``writer`` (amqtt's by default) may carry
        what a TLS front saw."""
        refusal = self.gate.admit(time.monotonic())
        if refusal is not None:
            self.metrics.refusals[refusal.value] += 1
            await connection.close(1013, "try again later")
            return
        self.metrics.connections[name] += 1
        try:
            await self.broker.external_connected(
                WebSocketsReader(connection), writer or WebSocketsWriter(connection), name)
        finally:
            self.metrics.connections[name] -= 1
            self.gate.release()

    def idle_limit(self, keepalive: int) -> float:
        """How long a client with this CONNECT keep-alive may stay silent."""
        if keepalive <= 0:
            return self.limits.max_idle
        return keepalive * self.limits.keepalive_factor

    def watch_idle(self, conn: MQTTConnection) -> None:
        """The client's CONNECT set its idle limit: the sweep watches it now."""
        deadline = _idle_deadline(conn)
        if deadline is not None:
            self._idle.watch(conn, deadline)

    # -- connection events (called by MQTTConnection) ----------------------

    def on_violation(self, conn: MQTTConnection, reason: str) -> None:
        """A client broke MQTT framing: close it, and only it."""
        if conn.transport is None or conn.transport.is_closing():
            return
        self.metrics.disconnects["protocol_violation"] += 1
        event(log, "protocol_violation", logging.WARNING, client=conn.client_id,
              peer=_peer(conn), reason=reason)
        conn.abort()

    def on_closed(self, conn: MQTTConnection) -> None:
        """The socket is gone; forget it (once)."""
        if conn in self._connections:
            self._connections.discard(conn)
            self.metrics.connections[conn.listener] -= 1
            self.gate.release()

    def _log_refusal(self, reason: str, address: Any, now: float) -> None:
        self._refused_since_log += 1
        if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL:
            event(log, "admission_refused", logging.WARNING, reason=reason,
                  peer=f"{address[0]}:{address[1]}",
                  refused=self._refused_since_log, open=self.gate.open,
                  max_connections=self.limits.max_connections)
            self._refusal_logged_at = now
            self._refused_since_log = 0

    async def _serve(self, conn: MQTTConnection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        one_port = self._one_ports.get(conn.listener)
        door = None
        if one_port is not None:
            door = FrontDoor(one_port.websocket_path if one_port.websocket else None)
        protocol: asyncio.Protocol = door or conn
        try:
            await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self._contexts[conn.listener],
                ssl_handshake_timeout=self.limits.tls_handshake_timeout,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.metrics.refusals["tls_handshake"] += 1
            event(log, "tls_failed", logging.WARNING, peer=_peer(conn), reason=_tls_reason(exc))
            sock.close()
            self.on_closed(conn)
            return
        if door is not None and not await self._through_door(door, conn):
            return
        try:
            await self.broker.external_connected(conn, conn, conn.listener)
        except Exception:  # one client's failure must never stop the broker
            log.exception("client handler failed: client=%s peer=%s", conn.client_id, _peer(conn))
        finally:
            conn.abort(graceful=True)
            self.on_closed(conn)

    async def _through_door(self, door: FrontDoor, conn: MQTTConnection) -> bool:
        """True when the one-port connection speaks MQTT (``conn`` has it
        now); an HTTP one is relayed here, to its end, and counted apart."""
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                kind = await door.decided
        except (TimeoutError, ConnectionError):
            if door.transport is not None:
                door.transport.abort()
            self.on_closed(conn)
            return False
        if kind is Kind.MQTT:
            door.hand_over(conn)
            return True
        self.metrics.connections[conn.listener] -= 1
        self._connections.discard(conn)
        assert conn.peer is not None  # set at accept
        upstream = self._one_ports[conn.listener].upstream(kind)
        if kind is Kind.WEBSOCKET:
            # The ws-front listener admits and counts it as its own.
            self.gate.release()
            await relay(door, kind, upstream, conn.peer)
            return False
        self.metrics.http_relays += 1
        try:
            await relay(door, kind, upstream, conn.peer)
        finally:
            self.metrics.http_relays -= 1
            self.gate.release()
        return False

    # -- periodic checks --------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            self.sweep(time.monotonic())

    async def _watch_revocations(self) -> None:
        while True:
            await asyncio.sleep(self._revocation_interval)
            if self.revocations.refresh():
                self.close_revoked()

    def sweep(self, now: float) -> None:
        """Drop clients silent past their idle limit (keep-alive x factor).
        Looks only at the connections whose deadline has passed
        (``broker.idle``), not at the whole fleet."""
        for conn in self._idle.expired(now, _idle_deadline):
            self.metrics.disconnects["keepalive"] += 1
            event(log, "keepalive_expired", logging.WARNING, client=conn.client_id,
                  peer=_peer(conn), silent_for=round(now - conn.last_rx, 1), limit=conn.idle_limit)
            conn.abort()
        self._idle.prune(len(self._connections), self._connections.__contains__)

    def close_revoked(self) -> None:
        """Close every connected session the revocation list now refuses."""
        revoked = self.revocations.current
        for client_id, (session, _) in list(self.broker.sessions.items()):
            identity = identity_of(session)
            if identity is None or not session.transitions.is_connected():
                continue
            if revoked.reason(identity.name, identity.serial, identity.token_id):
                self.broker.disconnect_client(client_id, "revoked")

    async def close(self) -> None:
        """Stop listening and close every client."""
        stopping = [*self._periodic, *self._acceptors]
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
        for conn in list(self._connections):
            conn.abort()
        await _wait_all(self._tasks)


async def _wait_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = [task for task in tasks if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=5)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _unmapped(host: str) -> str:
    """An IPv4 peer of a dual-stack listener as itself, not ``::ffff:a.b.c.d``."""
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


def _idle_deadline(conn: MQTTConnection) -> float | None:
    """When the connection expires if it stays silent; None once closed."""
    if conn.closed or conn.idle_limit is None:
        return None
    return conn.last_rx + conn.idle_limit


def _peer(conn: MQTTConnection) -> str:
    return f"{conn.peer[0]}:{conn.peer[1]}" if conn.peer else "unknown"


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return str(exc) or type(exc).__name__
