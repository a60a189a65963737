"""The broker's front door: accept, admit, layer TLS on, hand to the core.

The hub owns every client connection, whatever the transport:

- it counts and rate-limits raw TCP connections, fairly between sources
  (a flood from one host takes only what the others leave), and closes the
  excess at once, before any TLS work (``broker.admission``); a refused or
  failed connection is one log line per cause and ``refusal_log_interval``
  (``epns.logs.RateLimitedLog``);
- it bounds the TLS handshake, and the time from accept to CONNECT;
- it drops a client silent for ``keepalive_factor`` times its keep-alive, at
  that moment (a timer at the earliest deadline, ``broker.idle``);
- it closes a client that breaks the protocol, with one log line per cause
  and second (``epns.logs.Throttle``), never a traceback;
- it re-reads the revocation file and closes connections it now revokes.
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

from broker.admission import AdmissionGate, FairShare
from broker.connection import MQTTConnection
from broker.fleet_broker import FleetBroker
from broker.front_door import FrontDoor, OnePort, one_port_context, relay
from broker.idle import IdleWatch
from broker.metrics import Metrics
from broker.revocation import RevocationFile
from broker.sources import Source, source_of
from broker.websocket import WebSocketTransport
from epns.broker_config import LimitSettings
from epns.errors import MalformedPacket, UnsupportedProtocol
from epns.logs import RateLimitedLog, Throttle, event, throttled_event
from epns.mqtt import Connack, ConnackCode, encode
from epns.one_port import Kind

log = logging.getLogger(__name__)

# A client's protocol violation is logged once per cause and second, with
# the count held back: a fuzzer or a broken fleet cannot fill the log.
_violations = Throttle(1.0)
# The idle timer fires at most this often; a deadline is kept to within it.
_IDLE_TICK = 0.05


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
                                  limits.connect_burst, time.monotonic(), _fair_share(limits))
        self._connections: set[MQTTConnection] = set()
        self._idle: IdleWatch[MQTTConnection] = IdleWatch()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_timer_at = float("inf")
        self._contexts: dict[str, ssl.SSLContext] = {}
        # One-port listeners: where their HTTPS goes.
        self._one_ports: dict[str, OnePort] = {}
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Refused and failed connections: one line per cause and interval.
        self.quiet_log = RateLimitedLog(log, limits.refusal_log_interval)
        self._quiet_flush: asyncio.TimerHandle | None = None
        self._acceptors: list[asyncio.Task[None]] = []
        self._periodic: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the revocation watch. It serves every listener, the WebSocket
        one included, so it does not wait for listen()."""
        self._periodic = [asyncio.create_task(self._watch_revocations())]

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
            refusal = self.gate.admit(now, source_of(str(address[0])))
            if refusal is not None:
                self.metrics.refusals[refusal.value] += 1
                self._log_refusal(refusal.value, address, now)
                sock.close()
                continue
            conn = MQTTConnection(self, name, (_unmapped(str(address[0])), int(address[1])))
            self._connections.add(conn)
            self.metrics.connections[name] += 1
            self._spawn(self._serve(conn, sock))

    async def serve_websocket(self, name: str, connection: ws_server.ServerConnection, *,
                              peer: tuple[str, int] | None = None,
                              certificate: bytes | None = None) -> None:
        """One MQTT-over-WebSocket client of listener ``name``, admitted,
        counted and served as a TCP one is; ``peer`` and ``certificate`` are
        what a TLS-terminating front saw (default: the WebSocket's own)."""
        now = time.monotonic()
        source = _websocket_source(connection, peer)
        # Its TLS (the WebSocket server's, or the front's) is done: no handshake to count.
        refusal = self.gate.admit(now, source, handshake=False)
        if refusal is not None:
            self.metrics.refusals[refusal.value] += 1
            self.quiet(now, "admission_refused", refusal.value, listener=name,
                       peer=source.address if source else "unknown", open=self.gate.open)
            await connection.close(1013, "try again later")
            return
        if peer is None:
            address = connection.remote_address
            peer = (_unmapped(str(address[0])), int(address[1])) if address else None
        conn = MQTTConnection(self, name, peer, certificate=certificate)
        self._connections.add(conn)
        self.metrics.connections[name] += 1
        await WebSocketTransport(connection).run(conn)

    def idle_limit(self, keepalive: int) -> float:
        """How long a client with this CONNECT keep-alive may stay silent."""
        if keepalive <= 0:
            return self.limits.max_idle
        return keepalive * self.limits.keepalive_factor

    def watch_idle(self, conn: MQTTConnection) -> None:
        """Expire ``conn`` at its deadline (``MQTTConnection.deadline``) unless
        it speaks before; called when it opens and when its CONNECT sets the
        keep-alive."""
        deadline = conn.deadline()
        if deadline is not None and self._idle.watch(conn, deadline):
            self._arm_idle_timer(deadline)

    def _arm_idle_timer(self, deadline: float) -> None:
        """One timer, at the earliest deadline: a client is dropped when its
        time is up, not up to a sweep interval later."""
        if deadline >= self._idle_timer_at:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer_at = deadline
        delay = max(0.0, deadline - time.monotonic())
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_due)

    def _idle_due(self) -> None:
        self._idle_timer, self._idle_timer_at = None, float("inf")
        now = time.monotonic()
        self.sweep(now)
        following = self._idle.next_deadline()
        if following is not None:
            # At most one check per tick: after a connect storm, thousands of
            # CONNECT deadlines fall due a few milliseconds apart, and a timer
            # each was most of the broker's idle CPU.
            self._arm_idle_timer(max(following, now + _IDLE_TICK))

    # -- connection events (called by MQTTConnection) ----------------------

    def on_violation(self, conn: MQTTConnection, error: MalformedPacket) -> None:
        """A client sent a packet the standard forbids: close it, and only it
        (MQTT-4.8.0-1). Another protocol level is told so first (CONNACK 1,
        MQTT-3.1.2-2)."""
        if conn.transport is None or conn.transport.is_closing():
            return
        if conn.session is None:
            self.metrics.refusals["invalid_connect"] += 1
        else:
            self.metrics.disconnects["protocol_violation"] += 1
        throttled_event(_violations, (error.rule or error.reason.split(" ", 1)[0],),
                        time.monotonic(), log, "protocol_violation", client=conn.client_id,
                        peer=conn.peer_name, reason=error.reason, rule=error.rule)
        if isinstance(error, UnsupportedProtocol):
            conn.write(encode(Connack(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION)))
            conn.close()
        else:
            conn.abort()

    def on_closed(self, conn: MQTTConnection) -> None:
        """The connection is gone; forget it (once), and end its session's
        connection in the core."""
        if conn in self._connections:
            self._connections.discard(conn)
            self.metrics.connections[conn.listener] -= 1
            self.gate.release()
            self.metrics.closed += 1
            self.broker.connection_lost(conn)

    def _log_refusal(self, reason: str, address: Any, now: float) -> None:
        self.quiet(now, "admission_refused", reason, peer=f"{address[0]}:{address[1]}",
                   open=self.gate.open, max_connections=self.limits.max_connections)

    def quiet(self, now: float, name: str, reason: str, **fields: Any) -> None:
        """Log a refused or failed connection through ``quiet_log`` (one
        line per cause and interval), and make sure the count of the lines
        it holds back is written once the interval is over."""
        if not self.quiet_log.event(name, reason, now, **fields) and self._quiet_flush is None:
            self._quiet_flush = asyncio.get_running_loop().call_later(
                self.limits.refusal_log_interval, self._flush_quiet)

    def _flush_quiet(self) -> None:
        self._quiet_flush = None
        self.quiet_log.flush(time.monotonic())
        if self.quiet_log.holding():
            self._quiet_flush = asyncio.get_running_loop().call_later(
                self.limits.refusal_log_interval, self._flush_quiet)

    def _handshake_ended(self, conn: MQTTConnection) -> None:
        """The TLS handshake of ``conn`` ended, done or failed: its address
        has one in progress less (``broker.admission``)."""
        if conn.peer is not None:
            self.gate.handshake_ended(source_of(conn.peer[0]))

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
            self.quiet(time.monotonic(), "tls_failed", _tls_reason(exc), peer=conn.peer_name)
            sock.close()
            self.on_closed(conn)
            return
        except Exception:  # a fault of ours: it costs this client only, and frees its slot
            log.exception("tls_setup_failed peer=%s", conn.peer_name)
            sock.close()
            self.on_closed(conn)
            return
        finally:
            self._handshake_ended(conn)
        if door is not None:
            await self._through_door(door, conn)

    async def _through_door(self, door: FrontDoor, conn: MQTTConnection) -> None:
        """Hand a one-port connection that speaks MQTT to ``conn``; relay an
        HTTP one here, to its end, counted apart."""
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                kind = await door.decided
        except (TimeoutError, ConnectionError):
            if door.transport is not None:
                door.transport.abort()
            self.on_closed(conn)
            return
        if kind is Kind.MQTT:
            door.hand_over(conn)
            return
        self.metrics.connections[conn.listener] -= 1
        self._connections.discard(conn)
        assert conn.peer is not None  # set at accept
        upstream = self._one_ports[conn.listener].upstream(kind)
        if kind is Kind.WEBSOCKET:
            # The ws-front listener admits and counts it as its own.
            self.gate.release()
            await relay(door, kind, upstream, conn.peer)
            return
        self.metrics.http_relays += 1
        try:
            await relay(door, kind, upstream, conn.peer)
        finally:
            self.metrics.http_relays -= 1
            self.gate.release()

    # -- periodic checks --------------------------------------------------

    async def _watch_revocations(self) -> None:
        while True:
            await asyncio.sleep(self._revocation_interval)
            if self.revocations.refresh():
                self.close_revoked()

    def sweep(self, now: float) -> None:
        """Drop clients past their deadline: no CONNECT within connect_timeout
        of the accept, or silent past their idle limit (keep-alive x factor).
        Looks only at the connections whose deadline has passed
        (``broker.idle``), not at the whole fleet."""
        for conn in self._idle.expired(now, MQTTConnection.deadline):
            if conn.session is None:
                self.metrics.refusals["connect_timeout"] += 1
                event(log, "connect_timeout", logging.WARNING, peer=conn.peer_name,
                      timeout=self.limits.connect_timeout)
            else:
                self.metrics.disconnects["keepalive"] += 1
                event(log, "keepalive_expired", logging.WARNING, client=conn.client_id,
                      peer=conn.peer_name, silent_for=round(now - conn.last_rx, 1),
                      limit=conn.idle_limit)
            conn.abort()
        self._idle.prune(len(self._connections))

    def close_revoked(self) -> None:
        """Close every connected session the revocation list now refuses."""
        revoked = self.revocations.current
        for client_id, session in list(self.broker.sessions.items()):
            identity = session.identity
            if not session.connected:
                continue
            if revoked.reason(identity.name, identity.serial, identity.token_id):
                self.broker.disconnect_client(client_id, "revoked")

    async def close(self) -> None:
        """Stop listening and close every client."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
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


def _fair_share(limits: LimitSettings) -> FairShare:
    """The admission gate's per-source limits, from the settings."""
    return FairShare(address_rate=limits.source_connect_rate,
                     address_burst=limits.source_connect_burst,
                     subnet_rate=limits.subnet_connect_rate,
                     subnet_burst=limits.subnet_connect_burst, reserve=limits.connect_reserve,
                     handshakes=limits.source_handshakes, max_sources=limits.max_sources)


def _websocket_source(connection: ws_server.ServerConnection,
                      peer: tuple[str, int] | None) -> Source | None:
    """Where a WebSocket client comes from: what the front saw, else the
    WebSocket's own peer (None on a Unix socket)."""
    if peer is not None:
        return source_of(peer[0])
    address = connection.remote_address
    return source_of(str(address[0])) if isinstance(address, tuple) else None


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return str(exc) or type(exc).__name__
