"""The per-connection protocol handler: amqtt's, with the broker's packet paths.

Stock amqtt queues SUBSCRIBE, UNSUBSCRIBE and PUBLISH into per-session asyncio
queues that four waiter tasks per connection drain. Here the handler hands each
packet straight to the broker's router, which removes three tasks per
connection and lets a QoS 1 PUBLISH be acknowledged only after it was routed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from broker.outbox import Outbox, Send

if TYPE_CHECKING:
    from broker.fleet_broker import FleetBroker


class FleetHandler(BrokerProtocolHandler):
    """One client's protocol handler, wired to the broker's router and outbox."""

    router: FleetBroker
    outbox: Outbox
    # Set when a newer connection of the same client took the session over:
    # this one must then neither publish the will nor touch the session.
    superseded = False

    def bind(self, router: FleetBroker, outbox: Outbox) -> None:
        """Attach the router and the session's outbox before start()."""
        self.router = router
        self.outbox = outbox
        self._qos2_received: set[int] = set()
        self._drains: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Start reading. Override: stock amqtt creates the disconnect waiter
        only after the reader task started; a client that closes at once sets
        no waiter, and its session then stays "connected" forever."""
        self._disconnect_waiter = asyncio.get_running_loop().create_future()
        await super().start()

    async def _retry_deliveries(self) -> None:
        """Override: resend unacknowledged messages with DUP and fill the window
        from the queue, without stock amqtt's 10 s wait per message."""
        self.send(self.outbox.resume())

    def send(self, sends: list[Send]) -> None:
        """Write PUBLISH packets for these instructions."""
        if self.writer is None:
            return
        for item in sends:
            message = item.message
            packet = PublishPacket.build(message.topic, message.payload, item.packet_id,
                                         item.dup, message.qos, message.retain)
            self.writer.write(packet.to_bytes())
        self.router.metrics.messages_out += len(sends)
        if sends and not getattr(self.writer, "writes_immediately", False):
            # amqtt's WebSocket writer buffers until drain() sends a frame.
            self._drains.add(task := asyncio.ensure_future(self.writer.drain()))
            task.add_done_callback(self._drains.discard)

    async def handle_puback(self, puback: PubackPacket) -> None:
        """Override: the outbox owns in-flight messages, not a 5 s waiter."""
        freed = self.outbox.acked(puback.packet_id)
        if freed:
            self.send(freed)

    async def handle_subscribe(self, subscribe: SubscribePacket) -> None:
        """Route SUBSCRIBE to the broker directly (no queue, no waiter task)."""
        await self.router.subscribe(self, subscribe.variable_header.packet_id,
                                    subscribe.payload.topics)

    async def handle_unsubscribe(self, unsubscribe: UnsubscribePacket) -> None:
        """Route UNSUBSCRIBE to the broker directly."""
        await self.router.unsubscribe(self, unsubscribe.variable_header.packet_id,
                                      unsubscribe.payload.topics)

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        """Route first, then acknowledge: a PUBACK means subscribers have it."""
        qos = publish_packet.qos or 0
        packet_id = publish_packet.packet_id
        if qos == 2 and packet_id in self._qos2_received:
            # A resent QoS 2 PUBLISH before PUBREL: routed already, only re-ack.
            await self._send_packet(PubrecPacket.build(packet_id))
            return
        if not await self.router.on_publish(self, publish_packet):
            return
        if qos == 1:
            await self._send_packet(PubackPacket.build(packet_id))
        elif qos == 2:
            self._qos2_received.add(packet_id)
            await self._send_packet(PubrecPacket.build(packet_id))

    async def handle_pubrel(self, pubrel: PubrelPacket) -> None:
        """Complete an incoming QoS 2 flow (routed at PUBLISH, 'method A')."""
        self._qos2_received.discard(pubrel.packet_id)
        await self._send_packet(PubcompPacket.build(pubrel.packet_id))
