"""broker.websocket: a WebSocket client that does not read cannot make the
broker buffer for it, and an abort does not wait for a stuck send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.connection import MQTTConnection
from broker.websocket import WebSocketTransport
from epns.mqtt import Connect, Pingreq, encode
from tests.support.broker_core import CoreFleet

PINGS = encode(Pingreq()) * 50


class _NeverReads:
    """A WebSocket peer that sends PINGREQs as fast as it can and reads nothing."""

    transport: Any = None

    def __init__(self, agent_id: str) -> None:
        self.frames = 0
        self.closed_with: int | None = None
        self._first = encode(Connect(agent_id, 300))

    async def recv(self) -> bytes:
        self.frames += 1
        await asyncio.sleep(0)
        if self.frames == 1:
            return self._first
        return PINGS

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().create_future()  # the peer's window stays shut

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code


@pytest.mark.timeout(60)
def test_a_websocket_client_that_does_not_read_is_not_read_from(
        certificates: dict[str, bytes]) -> None:
    """Measured before: 670 frames read and 1.3 MB of answers buffered in 2 s,
    growing for as long as the client kept sending."""
    async def run() -> tuple[int, int, int, bool]:
        fleet = CoreFleet(certificates)
        peer = _NeverReads("agent-1")
        transport = WebSocketTransport(peer)  # type: ignore[arg-type]
        client = MQTTConnection(fleet.hub, "websocket", ("127.0.0.1", 1),
                                certificate=certificates["agent-1"])
        fleet.hub._connections.add(client)
        task = asyncio.create_task(transport.run(client))
        # Until its answers fill the high-water mark (about 2,600 frames of
        # 50 PINGREQs; longer on a loaded machine), then no frame more.
        async with asyncio.timeout(20):
            while not client.writes_paused:
                await asyncio.sleep(0.01)
        frames_then, buffered = peer.frames, transport.get_write_buffer_size()
        await asyncio.sleep(0.5)
        frames_later = peer.frames
        client.abort()
        await asyncio.wait_for(task, 2)  # the stuck send does not hold the close
        return frames_then, frames_later, buffered, client.closed

    frames_then, frames_later, buffered, closed = asyncio.run(run())
    assert frames_later == frames_then, "still reading from a client that does not read"
    assert buffered < 512 * 1024
    assert closed
