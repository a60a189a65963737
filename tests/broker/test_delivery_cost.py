"""Work per delivered message that amqtt 0.12.1 does and the broker does not.
Counted with a task factory (exact, not timings), against amqtt's stock
handler on the same bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from types import SimpleNamespace
from typing import Any

import pytest
from amqtt.mqtt.packet import MQTTPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import Session

from broker.handler import FleetHandler
from broker.metrics import Metrics
from broker.outbox import Outbox, Outgoing
from broker.session import FleetSession
from broker.wire import publish_packet

_ACKS = 20


class _BytesReader:
    """A client whose bytes are all there, then EOF."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    async def read(self, n: int = -1) -> bytes:
        await asyncio.sleep(0)  # a socket read yields to the loop
        chunk = self._data[self._at:self._at + n]
        self._at += len(chunk)
        return chunk

    def feed_eof(self) -> None:
        pass


class _Writer:
    writes_immediately = True  # as broker.connection.MQTTConnection: no drain task

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    async def drain(self) -> None:
        pass

    def get_peer_info(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    async def close(self) -> None:
        pass


async def _no_event(*_: Any, **__: Any) -> None:
    return None


def _read_acks(handler_class: type[BrokerProtocolHandler], session: Session,
               outbox: Outbox) -> tuple[int, _Writer]:
    """Let a handler read ``_ACKS`` PUBACKs to the end; the tasks it made."""
    acks = b"".join(b"\x40\x02" + packet_id.to_bytes(2, "big")
                    for packet_id in range(1, _ACKS + 1))
    return _read(handler_class, session, acks, SimpleNamespace(metrics=Metrics()), outbox)


def _read(handler_class: type[BrokerProtocolHandler], session: Session, data: bytes,
          router: Any, outbox: Outbox) -> tuple[int, _Writer]:
    """Let a handler read ``data`` to the end; the tasks it made, what it wrote."""
    made = 0
    writer = _Writer()

    def factory(loop: asyncio.AbstractEventLoop,
                coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop)

    async def main() -> None:
        manager: Any = SimpleNamespace(fire_event=_no_event)
        handler = handler_class(manager)
        session.keep_alive = 300
        handler.attach(session, _BytesReader(data), writer)
        if isinstance(handler, FleetHandler):
            handler.bind(router, outbox)
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        await handler.start()
        assert handler._reader_task is not None
        await asyncio.wait([handler._reader_task], timeout=5)
        await asyncio.sleep(0.05)  # stock: the per-packet tasks finish
        loop.set_task_factory(None)
        await handler.stop()

    asyncio.run(main())
    return made, writer


def test_pubacks_are_handled_without_a_task_each() -> None:
    """amqtt 0.12.1 handles each PUBACK in a task of its own; the broker acks
    in the reader, and the freed window slots are filled at once."""
    outbox = Outbox(max_inflight=_ACKS, max_queued=2 * _ACKS)
    for n in range(2 * _ACKS):
        outbox.offer(Outgoing("epns/v1/agents/a/cmd", b"%d" % n, 1), connected=False)
    first = outbox.resume()
    assert [send.packet_id for send in first] == list(range(1, _ACKS + 1))

    tasks, writer = _read_acks(FleetHandler, FleetSession(), outbox)

    assert tasks == 1  # the reader
    assert outbox.inflight == _ACKS
    assert outbox.queued == 0
    # start() resends the 20 unacked (DUP), then each ack frees a slot for the next.
    assert writer.written[_ACKS:] == [
        publish_packet("epns/v1/agents/a/cmd", b"%d" % n, 1, n + 1)
        for n in range(_ACKS, 2 * _ACKS)
    ]
    stock_tasks, _ = _read_acks(BrokerProtocolHandler, Session(), Outbox(1, 1))
    assert stock_tasks >= 1 + _ACKS


class _Router:
    """Takes every PUBLISH (the broker's router is tested elsewhere)."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.topics: list[str] = []

    async def on_publish(self, _: FleetHandler, packet: PublishPacket) -> bool:
        self.topics.append(packet.topic_name or "")
        return True


def test_publishes_are_routed_without_a_task_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt 0.12.1 handles each PUBLISH in a task of its own and writes its
    PUBACK as a packet object (``to_stream``: a write lock, a timestamp); the
    broker routes it in the reader, in order, and writes the ack's bytes."""
    encoded = 0
    stock_to_stream = MQTTPacket.to_stream

    async def to_stream(packet: MQTTPacket[Any, Any, Any], writer: Any) -> None:
        nonlocal encoded
        encoded += 1
        await stock_to_stream(packet, writer)

    monkeypatch.setattr(MQTTPacket, "to_stream", to_stream)
    topics = [f"epns/v1/agents/agent-{n}/cmd" for n in range(_ACKS)]
    data = b"".join(publish_packet(topic, b"wake", 1, n + 1) for n, topic in enumerate(topics))
    router = _Router()

    tasks, writer = _read(FleetHandler, FleetSession(), data, router, Outbox(1, 1))

    assert tasks == 1  # the reader
    assert encoded == 0
    assert router.topics == topics
    assert writer.written == [b"\x40\x02" + (n + 1).to_bytes(2, "big") for n in range(_ACKS)]
    stock_tasks, _ = _read(BrokerProtocolHandler, Session(), data, router, Outbox(1, 1))
    assert stock_tasks >= 1 + _ACKS
