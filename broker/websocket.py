"""MQTT over WebSocket into the same connection object as MQTT over TLS.

A WebSocket client's binary frames are a byte stream to MQTT (MQTT 3.1.1
section 6: packets are not aligned on frames, MQTT-6.0.0-2), so this adapter
plays the transport for an ``MQTTConnection``: it feeds the frames' bytes to
``data_received`` and sends what the connection writes as binary frames. One
ingress path, one codec, one set of checks, whatever the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets.asyncio.server as ws_server
from websockets.exceptions import ConnectionClosed

from broker.connection import MQTTConnection

# WebSocket close codes (RFC 6455 section 7.4.1). MQTT-6.0.0-1: MQTT travels
# in binary frames; a text frame closes the connection.
_NORMAL = 1000
_GOING_AWAY = 1001  # aborted: keep-alive, takeover, a protocol violation
_UNSUPPORTED_DATA = 1003
# Bytes written and not yet sent at which the connection stops reading from
# the client (MQTTConnection.pause_writing), and resumes below the low mark:
# a client that does not read must not make the broker buffer for it.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class WebSocketTransport:
    """The part of ``asyncio.Transport`` an ``MQTTConnection`` uses, over a
    WebSocket connection. Writes made in one turn of the event loop go out
    as one frame."""

    def __init__(self, connection: ws_server.ServerConnection) -> None:
        self._connection = connection
        self._protocol: MQTTConnection | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing_paused = False
        self._flushing: asyncio.Task[None] | None = None
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False
        self._abort = False

    # -- what MQTTConnection calls ---------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes; they leave in the next frame."""
        if self._closing:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if (not self._writing_paused and self._pending_bytes > _HIGH_WATER
                and self._protocol is not None):
            self._writing_paused = True
            self._protocol.pause_writing()
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    def is_closing(self) -> bool:
        """True once close() or abort() was called."""
        return self._closing

    def close(self) -> None:
        """Send what is queued, then close the WebSocket."""
        self._closing = True
        self._readable.set()
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    def abort(self) -> None:
        """Close now, without sending what is queued, even while a send waits
        on a client that does not read."""
        self._pending.clear()
        self._pending_bytes = 0
        self._abort = True
        self._closing = True
        self._readable.set()
        if self._flushing is not None:
            self._flushing.cancel()
        transport = self._connection.transport
        if transport is not None:
            transport.abort()

    def get_write_buffer_size(self) -> int:
        """Bytes written and not yet sent."""
        return self._pending_bytes

    def pause_reading(self) -> None:
        """Take no frame until resume_reading()."""
        self._readable.clear()

    def resume_reading(self) -> None:
        """Take frames again."""
        self._readable.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The TLS object of the WebSocket's own transport (None behind a front)."""
        transport = self._connection.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    # -- the two directions -------------------------------------------------------

    async def _flush(self) -> None:
        try:
            while self._pending and not self._abort:
                data = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                await self._connection.send(data)
                self._resume_writing()
        except ConnectionClosed:
            self._closing = True
        finally:
            self._flushing = None
        if self._closing:
            await self._connection.close(_GOING_AWAY if self._abort else _NORMAL)

    def _resume_writing(self) -> None:
        if (self._writing_paused and self._pending_bytes < _LOW_WATER
                and self._protocol is not None):
            self._writing_paused = False
            self._protocol.resume_writing()

    async def run(self, protocol: MQTTConnection) -> None:
        """Feed the connection's frames to ``protocol`` until either side closes."""
        self._protocol = protocol
        protocol.connection_made(self)  # type: ignore[arg-type]
        try:
            while not self._closing:
                await self._readable.wait()
                if self._closing:
                    break
                message = await self._connection.recv()
                if isinstance(message, str):
                    self._closing = True
                    await self._connection.close(_UNSUPPORTED_DATA, "MQTT needs binary frames")
                    break
                protocol.data_received(message)
        except ConnectionClosed:
            pass
        finally:
            self._closing = True
            try:
                if self._flushing is not None:
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await self._flushing
            finally:
                protocol.connection_lost(None)
