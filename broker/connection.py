"""One client connection: bytes from its transport in, packets to the broker.

The same protocol object serves every way a client comes in: TLS on 8883,
the one-port listener's MQTT (handed over by ``broker.front_door``), and MQTT
over WebSocket (``broker.websocket`` feeds it the frames' bytes). Each
``data_received`` goes through the strict codec (``epns.mqtt``): a packet the
standard forbids closes this connection, and only it, before the broker
sees a byte of it. Whole packets go to the broker in the order sent, handled
in line: nothing a client sends waits on a task.

Two bounds keep one client from holding the event loop or the broker's
memory: at most ``_BATCH`` packets are handled per turn of the loop (reading
pauses until the next turn), and a client that does not read what it is
sent (its transport's write buffer is full) is not read from either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.outbox import Send
from epns.errors import MalformedPacket
from epns.mqtt import Decoder, Role, publish_bytes

if TYPE_CHECKING:
    from broker.hub import ConnectionHub
    from broker.session import Session

# Packets handled per turn of the event loop before reading yields to the
# other clients.
_BATCH = 64
_PAUSED_FOR_WRITES = "writes"
_PAUSED_FOR_BATCH = "batch"


class MQTTConnection(asyncio.Protocol):
    """A client's connection, from its transport's first byte to its close."""

    def __init__(self, hub: ConnectionHub, listener: str, peer: tuple[str, int] | None, *,
                 certificate: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.listener = listener
        self.peer = peer
        # The client certificate: from TLS at connection_made, or what a
        # TLS-terminating front verified (``broker.ws_front``).
        self.certificate = certificate
        self.transport: Any = None  # asyncio's, uvloop's or a WebSocket transport
        self.session: Session | None = None
        self.opened_at = self.last_rx = clock()
        # Seconds a client may stay silent; until CONNECT, how long it has to
        # send one (counted from opened_at, however it trickles bytes).
        self.idle_limit: float = hub.limits.connect_timeout
        # The deadline the hub's idle watch has it filed at (broker.idle).
        self.idle_filed: float | None = None
        self.closed = False
        # A newer connection of the same client took the session over: this
        # one neither publishes the will nor touches the session.
        self.superseded = False
        # DISCONNECT was received: the will is discarded (MQTT-3.14.4-3).
        self.graceful = False
        self._clock = clock
        self._decoder = Decoder(Role.SERVER, hub.max_packet_size)
        self._paused: set[str] = set()

    @property
    def client_id(self) -> str | None:
        """The client id of the session, once CONNECT was accepted."""
        return self.session.client_id if self.session is not None else None

    @property
    def writes_paused(self) -> bool:
        """True while the client does not read what it is sent."""
        return _PAUSED_FOR_WRITES in self._paused

    @property
    def peer_name(self) -> str:
        """The client's address and port, for log lines."""
        return f"{self.peer[0]}:{self.peer[1]}" if self.peer else "unknown"

    def deadline(self) -> float | None:
        """When this connection expires if it stays silent; None once closed."""
        if self.closed:
            return None
        if self.session is None:
            return self.opened_at + self.idle_limit
        return self.last_rx + self.idle_limit

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.certificate is None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.certificate = ssl_object.getpeercert(binary_form=True)
        self.hub.watch_idle(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._clock()
        self._decoder.feed(data)
        self._handle_packets()

    def eof_received(self) -> bool:
        return False  # close: MQTT has no half-closed connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.hub.on_closed(self)

    def pause_writing(self) -> None:
        self._pause(_PAUSED_FOR_WRITES)

    def resume_writing(self) -> None:
        self._resume(_PAUSED_FOR_WRITES)

    # -- packets in -----------------------------------------------------------

    def _handle_packets(self) -> None:
        handled = 0
        while not self.closed and not self.transport.is_closing():
            try:
                packet = self._decoder.next_packet()
            except MalformedPacket as exc:
                self.hub.on_violation(self, exc)
                return
            if packet is None:
                return
            self.hub.broker.on_packet(self, packet)
            handled += 1
            if handled == _BATCH and self._decoder.buffered:
                self._pause(_PAUSED_FOR_BATCH)
                asyncio.get_running_loop().call_soon(self._next_batch)
                return

    def _next_batch(self) -> None:
        self._resume(_PAUSED_FOR_BATCH)
        self._handle_packets()

    def _pause(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- bytes out --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes to the client; dropped once the connection is going."""
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, sends: list[Send]) -> None:
        """Write one PUBLISH per instruction of the session's outbox."""
        for item in sends:
            message = item.message
            self.write(publish_bytes(message.topic, message.payload, message.qos,
                                     item.packet_id, dup=item.dup, retain=message.retain))
        self.hub.metrics.messages_out += len(sends)

    def close(self) -> None:
        """Flush what is queued, then close."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping what is queued; also a connection that is
        closing already, whose flush a client holding its window shut could
        otherwise stretch for as long as it likes."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
