"""One client connection: the asyncio protocol amqtt reads from and writes to.

amqtt's stream adapters read straight from the socket with no limits. This
protocol sits in between: it scans frame headers as bytes arrive (oversized or
malformed frames close the connection before their bodies are buffered),
notes the CONNECT keep-alive, stamps the last time the client sent anything,
and serves amqtt's small reads from its buffer without a system call each.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from amqtt.adapters import ReaderAdapter, WriterAdapter

from broker import framing
from epns.errors import ProtocolViolation

if TYPE_CHECKING:
    from broker.hub import ConnectionHub

# Stop reading from a client that has this much unread data queued; the
# handler catches up before more is taken from the socket.
_HIGH_WATER = 256 * 1024
_COMPACT_AT = 16 * 1024


class MQTTConnection(asyncio.Protocol, ReaderAdapter, WriterAdapter):
    """A client socket, admitted by the hub, with its TLS handshake done."""

    # write() hands bytes to the transport at once; no drain() is needed to send.
    writes_immediately = True

    def __init__(self, hub: ConnectionHub, listener: str, clock: Callable[[], float]) -> None:
        self.hub = hub
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.client_id: str | None = None
        self.last_rx = clock()
        # Seconds of silence after which the client is dropped; until the
        # CONNECT arrives the hub applies its CONNECT timeout instead.
        self.idle_limit: float | None = None
        self.connect_seen = False
        self.closed = False
        self._clock = clock
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self._read_at = 0  # stream offset of the next byte amqtt reads
        self._scan_at = 0  # stream offset of the next frame header to scan
        # A list, not a deque: it rarely holds more than two ends, and an
        # empty deque is 760 B per connection.
        self._frame_ends: list[int] = []
        self._connect_size = 0
        self._eof = False
        self._reader_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        self.last_rx = self._clock()

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._clock()
        self._buffer += data
        try:
            self._scan()
        except ProtocolViolation as exc:
            self.hub.on_violation(self, str(exc))
            return
        if self._base + len(self._buffer) - self._read_at > _HIGH_WATER and self.transport:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.closed = True
        self._wake_reader()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self.hub.on_closed(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- framing ------------------------------------------------------------

    def _scan(self) -> None:
        max_size = self.hub.max_packet_size
        while True:
            header = framing.parse_header(self._buffer, self._scan_at - self._base, max_size)
            if header is None:
                break
            if self._scan_at == 0:
                if header.packet_type != framing.CONNECT:
                    raise ProtocolViolation("the first packet is not CONNECT")
                self._connect_size = header.size
            self._frame_ends.append(self._scan_at + header.size)
            self._scan_at += header.size
        # The buffer is not compacted before this point, so the CONNECT frame
        # is still whole at its start.
        if not self.connect_seen and 0 < self._connect_size <= len(self._buffer):
            keepalive = framing.connect_keepalive(self._buffer[:self._connect_size])
            self.connect_seen = True
            self.idle_limit = self.hub.idle_limit(keepalive)
            self.hub.watch_idle(self)

    # -- amqtt ReaderAdapter -------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Return exactly ``n`` bytes of the current frame (fewer only at EOF)."""
        end = self._read_at + n
        while True:
            while self._frame_ends and self._frame_ends[0] <= self._read_at:
                del self._frame_ends[0]
            if self._frame_ends and end > self._frame_ends[0]:
                # amqtt decoded a length field that points past its own frame:
                # the stream can no longer be trusted. Checked before waiting,
                # or a lying length would make us wait for bytes forever.
                self.hub.on_violation(self, "a length field runs past the end of its packet")
                raise ProtocolViolation("a length field runs past the end of its packet")
            if self._base + len(self._buffer) >= end or self._eof:
                break
            self._reader_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._reader_waiter
            finally:
                self._reader_waiter = None
        start = self._read_at - self._base
        data = bytes(self._buffer[start:start + n])
        self._read_at += len(data)
        consumed = self._read_at - self._base
        if self.connect_seen and (consumed >= _COMPACT_AT or consumed == len(self._buffer)):
            del self._buffer[:consumed]
            self._base = self._read_at
        if self._reading_paused and len(self._buffer) < _HIGH_WATER // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def feed_eof(self) -> None:
        """amqtt's hook to end reading."""
        self._eof = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader_waiter is not None and not self._reader_waiter.done():
            self._reader_waiter.set_result(None)

    # -- amqtt WriterAdapter -------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes on the transport; dropped once the connection is gone."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self._writing_paused and not self.closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def get_peer_info(self) -> tuple[str, int] | None:
        """The client's address and port."""
        return self.peer

    def get_ssl_info(self) -> ssl.SSLObject | None:
        """The TLS object, for the client certificate."""
        if self.transport is None:
            return None
        ssl_object: ssl.SSLObject | None = self.transport.get_extra_info("ssl_object")
        return ssl_object

    async def close(self) -> None:
        """Flush and close the connection."""
        self.abort(graceful=True)

    def abort(self, *, graceful: bool = False) -> None:
        """Close now; ``graceful`` flushes what is queued first."""
        if self.transport is not None and not self.transport.is_closing():
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()
