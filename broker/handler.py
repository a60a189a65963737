"""The per-connection protocol handler: amqtt's, with the broker's packet paths.

Stock amqtt queues SUBSCRIBE, UNSUBSCRIBE and PUBLISH into per-session asyncio
queues that four waiter tasks per connection drain. Here the handler hands each
packet straight to the broker's router, which removes three tasks per
connection and lets a QoS 1 PUBLISH be acknowledged only after it was routed.

It also carries less per connection than amqtt 0.12.1's handler (measured in
docs/benchmark-history.md, "Broker tuning for issue 6"): no subscription queues, the
session is a ``FleetSession`` (no state machine), and an idle connection is one
reader task waiting on its socket, without a second task and timer per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.codecs_amqtt import read_or_raise
from amqtt.errors import MQTTError, NoDataError
from amqtt.events import MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    UNACCEPTABLE_PROTOCOL_VERSION,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RESERVED_0,
    RESERVED_15,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session

from broker.outbox import Outbox, Send
from broker.session import FleetSession
from broker.wire import publish_packet

if TYPE_CHECKING:
    from amqtt.broker import BrokerContext

    from broker.fleet_broker import FleetBroker

_MQTT_3_1_1 = 4
_PUBACK_REMAINING = 2  # the packet id: a PUBACK's whole body (MQTT 3.1.1 section 3.4)
_PUBACK_HEADER = bytes((PUBACK << 4, _PUBACK_REMAINING))
# amqtt's handler logs its debug lines here; one logger for all connections.
_amqtt_log = logging.getLogger("amqtt.mqtt.protocol.handler")
_HANDLERS = {
    CONNACK: "handle_connack", SUBSCRIBE: "handle_subscribe", UNSUBSCRIBE: "handle_unsubscribe",
    SUBACK: "handle_suback", UNSUBACK: "handle_unsuback", PUBACK: "handle_puback",
    PUBREC: "handle_pubrec", PUBREL: "handle_pubrel", PUBCOMP: "handle_pubcomp",
    PINGREQ: "handle_pingreq", PINGRESP: "handle_pingresp", PUBLISH: "handle_publish",
    DISCONNECT: "handle_disconnect",
}


class FleetHandler(BrokerProtocolHandler):
    """One client's protocol handler, wired to the broker's router and outbox."""

    router: FleetBroker
    outbox: Outbox
    # Set when a newer connection of the same client took the session over:
    # this one must then neither publish the will nor touch the session.
    superseded = False

    def __init__(self, plugins_manager: PluginManager[BrokerContext]) -> None:
        # Override: amqtt 0.12.1's constructors add two asyncio queues for
        # SUBSCRIBE and UNSUBSCRIBE and an Event to stop the reader (about
        # 6 KiB per connection); this handler routes packets directly and
        # awaits its reader task instead. The attributes are otherwise
        # ProtocolHandler's (tests/broker/test_session.py compares them).
        self.logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = _amqtt_log
        self.session: Any = None  # amqtt is untyped here; attach() sets it
        self.reader: ReaderAdapter | None = None
        self.writer: WriterAdapter | None = None
        self.plugins_manager = plugins_manager
        self._loop = asyncio.get_running_loop()
        self._reader_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.TimerHandle | None = None
        self._reader_ready: asyncio.Event | None = None
        self._puback_waiters: dict[int, asyncio.Future[PubackPacket]] = {}
        self._pubrec_waiters: dict[int, asyncio.Future[PubrecPacket]] = {}
        self._pubrel_waiters: dict[int, asyncio.Future[PubrelPacket]] = {}
        self._pubcomp_waiters: dict[int, asyncio.Future[PubcompPacket]] = {}
        self._write_lock = asyncio.Lock()
        self._disconnect_waiter: asyncio.Future[DisconnectPacket | None] | None = None

    def _init_session(self, session: Session) -> None:
        """Override: amqtt 0.12.1 builds a LoggerAdapter per connection, and a
        write keep-alive timer, re-armed at every packet sent, whose callback
        (handle_write_timeout) does nothing in a broker. The hub enforces the
        keep-alive (broker.hub.ConnectionHub.sweep)."""
        self.session = session
        self.keepalive_timeout: int | None = None

    @classmethod
    async def init_from_connect(
        cls, reader: ReaderAdapter, writer: WriterAdapter,
        plugins_manager: PluginManager[BrokerContext],
    ) -> tuple[FleetHandler, FleetSession]:
        """Read and check CONNECT; the handler and the client's new session.
        Override: amqtt 0.12.1 builds a stock Session, whose transitions.Machine
        costs about 0.23 ms of CPU and 15 KiB per connect. The checks and their
        CONNACK codes are amqtt's."""
        connect = await ConnectPacket.from_stream(reader)
        await plugins_manager.fire_event(MQTTEvents.PACKET_RECEIVED, packet=connect)
        problem = _connect_problem(connect)
        if problem is not None:
            code, message = problem
            if code is not None:
                connack = ConnackPacket.build(0, code)
                await plugins_manager.fire_event(MQTTEvents.PACKET_SENT, packet=connack)
                await connack.to_stream(writer)
                await writer.close()
            raise MQTTError(message)
        session = FleetSession()
        session.client_id = connect.client_id
        session.clean_session = connect.clean_session_flag
        session.will_flag = connect.will_flag
        session.will_retain = connect.will_retain_flag
        session.will_qos = connect.will_qos
        session.will_topic = connect.will_topic
        session.will_message = connect.will_message
        session.username = connect.username
        session.password = connect.password
        peer = writer.get_peer_info()
        if peer is not None:
            session.remote_address, session.remote_port = peer
        session.ssl_object = writer.get_ssl_info()
        session.keep_alive = max(connect.keep_alive, 0)
        return cls(plugins_manager), session

    async def stop(self) -> None:
        """Stop reading and close the connection. Override: amqtt 0.12.1's
        stop() waits for the reader on an Event and drains the subscription
        queues this handler does not have."""
        self._stop_waiters()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.wait([task])
        if self.writer is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, OSError):
                await self.writer.close()
        if self._disconnect_waiter is not None and not self._disconnect_waiter.done():
            self._disconnect_waiter.set_result(None)
        self._disconnect_waiter = None

    def bind(self, router: FleetBroker, outbox: Outbox) -> None:
        """Attach the router and the session's outbox before start()."""
        self.router = router
        self.outbox = outbox
        # Both made on first use: most connections never need them.
        self._qos2_received: set[int] | None = None
        self._drains: set[asyncio.Future[None]] | None = None

    async def start(self) -> None:
        """Start reading. Override: stock amqtt creates the disconnect waiter
        only after the reader task started, so a client that closes at once
        sets no waiter and its session stays "connected" forever; and it waits
        on an Event for the reader task to start, which nothing needs."""
        self._disconnect_waiter = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.create_task(self._reader_loop())
        await self._retry_deliveries()

    async def _reader_loop(self) -> None:
        """Read packets until the connection ends, then stop. Override: amqtt
        0.12.1 wraps every read in asyncio.wait_for(keep-alive), an extra task
        and timer for as long as the connection is idle, to call
        handle_read_timeout, which does nothing in a broker. Packets are
        dispatched as amqtt does: CONNECT inline, the others each in a task."""
        # Packet tasks still running; a done task leaves at once, or it would
        # be kept (with its coroutine) until the next packet, for hours.
        running: set[asyncio.Task[None]] = set()
        while self.reader is not None:
            try:
                if not await self._read_packet(running):
                    break
            except (MQTTError, NoDataError):
                continue  # as amqtt: the packet is discarded
            except asyncio.CancelledError:
                break
            except Exception as exc:  # as amqtt: any other error ends the connection
                _amqtt_log.warning("FleetHandler: unhandled exception in reader: %r", exc)
                break
        for task in list(running):
            task.cancel()
        await self.handle_connection_closed()
        await self.stop()

    async def _read_packet(self, running: set[asyncio.Task[None]]) -> bool:
        """Read and dispatch one packet; False at the end of the stream. A
        method of its own so that the last packet and its task are not kept
        alive by the loop's locals while the connection idles (1.5 KiB)."""
        assert self.reader is not None
        header = await MQTTFixedHeader.from_stream(self.reader)
        if header is None:
            return False
        if header.packet_type in (RESERVED_0, RESERVED_15):
            await self.handle_connection_closed()
            return True
        if header.packet_type == PUBACK and header.remaining_length == _PUBACK_REMAINING:
            # Override: amqtt 0.12.1 decodes each PUBACK into a packet object,
            # fires PACKET_RECEIVED (no plugin of this broker listens) and
            # handles it in a task of its own: 10,000 tasks after a wake-all.
            # Acknowledging is a dictionary lookup; it is done here.
            self._acked(int.from_bytes(await read_or_raise(self.reader, 2), "big"))
            return True
        packet = await packet_class(header).from_stream(self.reader, fixed_header=header)
        await self.plugins_manager.fire_event(
            MQTTEvents.PACKET_RECEIVED, packet=packet, session=self.session)
        if header.packet_type == CONNECT:
            await self.handle_connect(cast("ConnectPacket", packet))
            return True
        if header.packet_type == PUBLISH:
            # Override: amqtt 0.12.1 handles each PUBLISH in a task of its own
            # (a task per wake-up sent). Routing does not wait on anything but
            # the PUBACK's write, so the reader does it in turn: no task, and a
            # client's messages are routed in the order sent (MQTT 3.1.1 4.6).
            await self.handle_publish(cast("PublishPacket", packet))
            return True
        name = _HANDLERS.get(header.packet_type)
        if name is not None:
            task = asyncio.create_task(getattr(self, name)(packet))
            running.add(task)
            task.add_done_callback(running.discard)
        return True

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
            # broker.wire, not amqtt's PublishPacket: a tenth of the CPU per message.
            self.writer.write(publish_packet(message.topic, message.payload, message.qos,
                                             item.packet_id, dup=item.dup,
                                             retain=message.retain))
        self.router.metrics.messages_out += len(sends)
        if sends and not getattr(self.writer, "writes_immediately", False):
            # amqtt's WebSocket writer buffers until drain() sends a frame.
            if self._drains is None:
                self._drains = set()
            self._drains.add(task := asyncio.ensure_future(self.writer.drain()))
            task.add_done_callback(self._drains.discard)

    async def handle_puback(self, puback: PubackPacket) -> None:
        """Override: the outbox owns in-flight messages, not a 5 s waiter.
        Only a malformed PUBACK comes here (``_read_packet`` takes the others)."""
        self._acked(puback.packet_id)

    def _acked(self, packet_id: int) -> None:
        freed = self.outbox.acked(packet_id)
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
        if qos == 2 and self._qos2_received and packet_id in self._qos2_received:
            # A resent QoS 2 PUBLISH before PUBREL: routed already, only re-ack.
            await self._send_packet(PubrecPacket.build(packet_id))
            return
        if not await self.router.on_publish(self, publish_packet):
            return
        if qos == 1:
            await self._write_puback(packet_id)
        elif qos == 2:
            if self._qos2_received is None:
                self._qos2_received = set()
            self._qos2_received.add(packet_id)
            await self._send_packet(PubrecPacket.build(packet_id))

    async def _write_puback(self, packet_id: int) -> None:
        """Override of amqtt 0.12.1's ``_send_packet`` for the PUBACK of each
        incoming QoS 1 PUBLISH: that builds a packet object, takes a write
        lock, stamps the packet with ``datetime.now(UTC)`` and fires
        PACKET_SENT (no plugin of this broker listens), about a fifth of the
        broker's CPU per per-agent wake-up (py-spy, docs/benchmark-history.md "Delivery
        latency"). A PUBACK is four bytes, written in one call."""
        if self.writer is None:
            return
        self.writer.write(_PUBACK_HEADER + packet_id.to_bytes(2, "big"))
        if not getattr(self.writer, "writes_immediately", False):
            await self.writer.drain()  # amqtt's WebSocket writer sends on drain()

    async def handle_pubrel(self, pubrel: PubrelPacket) -> None:
        """Complete an incoming QoS 2 flow (routed at PUBLISH, 'method A')."""
        if self._qos2_received:
            self._qos2_received.discard(pubrel.packet_id)
        await self._send_packet(PubcompPacket.build(pubrel.packet_id))


def _connect_problem(connect: ConnectPacket) -> tuple[int | None, str] | None:
    """amqtt 0.12.1's CONNECT checks (BrokerProtocolHandler.init_from_connect):
    the CONNACK code to answer (None: close without one) and why, or None."""
    header, payload = connect.variable_header, connect.payload
    if header is None or payload is None:
        return None, "CONNECT packet: header or payload not initialized"
    if payload.client_id is None:
        return None, "[MQTT-3.1.3-3] : Client identifier must be present"
    if header.will_flag and (payload.will_topic is None or payload.will_message is None):
        return None, "Will flag set, but will topic/message not present in payload"
    if header.reserved_flag:
        return None, "[MQTT-3.1.2-3] CONNECT reserved flag must be set to 0"
    if connect.proto_name != "MQTT":
        return None, f'[MQTT-3.1.2-1] Incorrect protocol name: "{connect.proto_name}"'
    if connect.proto_level != _MQTT_3_1_1:
        return UNACCEPTABLE_PROTOCOL_VERSION, f"Invalid protocol level: {connect.proto_level}"
    if (not connect.username_flag and connect.password_flag) or (
            connect.username_flag and connect.username is None) or (
            connect.password_flag and connect.password is None):
        return BAD_USERNAME_PASSWORD, "Invalid username or password fields"
    if connect.clean_session_flag is False and payload.client_id_is_random:
        return IDENTIFIER_REJECTED, "[MQTT-3.1.3-8] No client Id provided (cleansession=0)"
    return None
