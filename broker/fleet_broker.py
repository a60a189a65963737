"""amqtt's Broker, with the session lifecycle and routing a fleet needs.

Each override below names the amqtt 0.12.1 defect it fixes; tests under
``tests/broker`` fail on the stock behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.expiry import SessionExpiry
from broker.handler import FleetHandler
from broker.metrics import Metrics
from broker.outbox import Outbox, Outgoing
from broker.plugins import identity_of, refusal_of
from broker.routing import SubscriptionIndex, is_valid_filter, is_wildcard
from epns.broker_config import LimitSettings
from epns.errors import CONNACK_NOT_AUTHORIZED
from epns.logs import event
from epns.topics import filter_matches

log = logging.getLogger(__name__)

_SUBACK_FAILURE = 0x80
# The outbox implements QoS 1 delivery; QoS 2 subscriptions are granted QoS 1,
# which MQTT 3.1.1 allows (section 3.9.3).
_MAX_GRANTED_QOS = 1
# How often expired offline sessions are dropped (amqtt's monitor: 1 s).
_EXPIRY_INTERVAL = 1.0


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _peer(writer: WriterAdapter) -> str:
    info = writer.get_peer_info()
    return f"{info[0]}:{info[1]}" if info else "unknown"


class FleetBroker(Broker):
    """The embedded broker. Listeners are ``external``: ``broker.hub`` accepts
    sockets and hands them in through amqtt's ``external_connected``."""

    def __init__(self, config: dict[str, Any], limits: LimitSettings, metrics: Metrics) -> None:
        super().__init__(config)
        self.limits = limits
        self.metrics = metrics
        self.index = SubscriptionIndex()
        self.outboxes: dict[str, Outbox] = {}
        self.writers: dict[str, WriterAdapter] = {}
        self.expiry = SessionExpiry(limits.session_expiry)
        plugins = self.plugins_manager.plugins
        self._auth_checks = [p.authenticate for p in plugins if isinstance(p, BaseAuthPlugin)]
        self._topic_checks = [p.topic_filtering for p in plugins
                              if isinstance(p, BaseTopicPlugin)]
        metrics.sessions = lambda: len(self._sessions)
        metrics.subscriptions = lambda: len(self.index)

    # -- connection lifecycle ---------------------------------------------

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        """Override. Stock amqtt deletes a clean session, or takes over a
        connected one, *before* the client has authenticated: anyone who knows
        an agent id could disconnect that agent or wipe its queued commands.
        It also waits for CONNECT forever. Here CONNECT has a deadline, and no
        existing session is touched until the client has proven who it is."""
        peer = _peer(writer)
        try:
            # asyncio.timeout, not wait_for: no extra task per connect.
            async with asyncio.timeout(self.limits.connect_timeout):
                handler, incoming = await FleetHandler.init_from_connect(
                    reader, writer, self.plugins_manager)
        except TimeoutError:
            self.metrics.refusals["connect_timeout"] += 1
            event(log, "connect_timeout", logging.WARNING, peer=peer,
                  timeout=self.limits.connect_timeout)
            return
        except (AMQTTError, MQTTError, NoDataError) as exc:
            self.metrics.refusals["invalid_connect"] += 1
            event(log, "connect_invalid", logging.WARNING, peer=peer, error=str(exc) or "no data")
            return
        if not await self._admit(incoming, writer, listener_name):
            return
        assert isinstance(handler, FleetHandler)
        session = await self._adopt_session(incoming)
        client_id = session.client_id
        handler.attach(session, reader, writer)
        handler.bind(self, self.outboxes[client_id])
        self._sessions[client_id] = (session, handler)
        self.writers[client_id] = writer
        if hasattr(writer, "client_id"):
            writer.client_id = client_id
        if not session.transitions.is_connected():
            session.transitions.connect()
        await handler.mqtt_connack_authorize(True)
        self.metrics.connected(time.monotonic())
        identity = identity_of(session)
        event(log, "connected", client=client_id, peer=peer, listener=listener_name,
              role=identity.role if identity else None,
              auth=identity.method if identity else None,
              resumed=bool(session.parent), keepalive=incoming.keep_alive)
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=client_id, client_session=session)
        await handler.start()
        result = await handler.wait_disconnect()
        await self._end_connection(session, handler, result)

    async def _admit(self, incoming: Session, writer: WriterAdapter, listener: str) -> bool:
        """Authenticate, and check the will topic against the ACL. A refused
        client gets the CONNACK code of its refusal and one log line."""
        refusal: str | None = None
        code = CONNACK_NOT_AUTHORIZED
        if not await self._authenticate(incoming, self.listeners_config[listener]):
            error = refusal_of(incoming)
            refusal = str(error) if error else "refused by an authentication plugin"
            code = error.connack_code if error else CONNACK_NOT_AUTHORIZED
            kind = _snake(type(error).__name__) if error else "plugin"
        elif incoming.will_flag and not await self._topic_filtering(
                incoming, incoming.will_topic, Action.PUBLISH):
            # Stock amqtt never checks the will topic: a client could have the
            # broker publish its will to a topic it may not publish to itself.
            refusal = f"will topic {incoming.will_topic!r} is not allowed"
            kind = "will_denied"
        if refusal is None:
            return True
        self.metrics.refusals[kind] += 1
        event(log, "refused", logging.WARNING, client=incoming.client_id, peer=_peer(writer),
              listener=listener, reason=refusal, connack=code)
        writer.write(ConnackPacket.build(0, code).to_bytes())
        # amqtt's WebSocket writer buffers until drain(): without it a
        # WebSocket client never learns why it was refused.
        await writer.drain()
        await writer.close()
        return False

    async def _authenticate(self, session: Session, _: Any) -> bool:
        """Override: amqtt 0.12.1 runs each plugin's check in its own task
        under asyncio.gather, a task, a future and a trip through the event
        loop per check, three checks per connect. The plugins are awaited in
        turn; the verdict is amqtt's: at least one answer, and all True."""
        answers = [await check(session=session) for check in self._auth_checks]
        results = [answer for answer in answers if answer is not None]
        return bool(results) and all(results)

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """Override, as ``_authenticate``: every topic plugin must allow."""
        for check in self._topic_checks:
            if not await check(session=session, topic=topic, action=action):
                return False
        return True

    async def _adopt_session(self, incoming: Session) -> Session:
        """The session this (authenticated) connection continues or starts."""
        client_id = incoming.client_id
        self.expiry.forget(client_id)
        existing = self._sessions.get(client_id)
        if existing is not None and existing[0].transitions.is_connected():
            await self._take_over(client_id, existing[1])
        if incoming.clean_session or existing is None:
            if existing is not None:
                await self._cleanup_session(client_id)
            incoming.parent = 0
            self.outboxes[client_id] = Outbox(self.limits.max_inflight, self.limits.max_queued)
            return incoming
        session = existing[0]
        for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain",
                     "keep_alive", "username", "password", "ssl_object", "remote_address",
                     "remote_port"):
            setattr(session, name, getattr(incoming, name))
        session.attributes.update(incoming.attributes)
        session.parent = 1
        return session

    async def _take_over(self, client_id: str, old: FleetHandler) -> None:
        """A client reconnected while its old connection is still open (a
        half-open socket, typically): close the old one, without its will."""
        old.superseded = True
        event(log, "takeover", client=client_id)
        self.metrics.disconnects["takeover"] += 1
        await old.stop()

    async def _end_connection(self, session: Session, handler: FleetHandler,
                              result: DisconnectPacket | None) -> None:
        """Override of stock ``_handle_disconnect``: the will is routed with the
        ACL-checked path, a superseded connection leaves the session alone, and
        a clean session is dropped at once instead of by the 1 s monitor."""
        client_id = session.client_id
        await self._stop_handler(handler)
        if handler.superseded:
            return
        self.writers.pop(client_id, None)
        graceful = isinstance(result, DisconnectPacket)
        if not graceful and session.will_flag:
            await self.publish(session, session.will_topic, bytes(session.will_message or b""),
                               session.will_qos or 0, retain=bool(session.will_retain))
        session.transitions.disconnect()
        self.metrics.disconnects["client" if graceful else "lost"] += 1
        event(log, "disconnected", client=client_id, graceful=graceful,
              will=bool(session.will_flag and not graceful))
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_DISCONNECTED, client_id=client_id, client_session=session)
        if session.clean_session:
            await self._cleanup_session(client_id)
        else:
            self.expiry.disconnected(client_id, time.monotonic())

    async def _session_monitor(self) -> None:
        """Override: amqtt 0.12.1 scans every session twice a second for
        expired ones (2 % of a core with 10,000 agents idle). Clean sessions
        are dropped at disconnect (``_end_connection``); stored ones expire
        through ``broker.expiry``, which looks at the expired ones only."""
        while True:
            await asyncio.sleep(_EXPIRY_INTERVAL)
            await self.expire_sessions(time.monotonic())

    async def expire_sessions(self, now: float) -> int:
        """Drop the sessions offline for ``limits.session_expiry``."""
        expired = 0
        for client_id in self.expiry.due(now):
            entry = self._sessions.get(client_id)
            if entry is None or entry[0].transitions.is_connected():
                continue  # gone already, or back (forget() came first)
            event(log, "session_expired", client=client_id)
            await self._cleanup_session(client_id)
            expired += 1
        return expired

    async def _cleanup_session(self, client_id: str) -> None:
        """Forget the session, and its expiry."""
        self.expiry.forget(client_id)
        await super()._cleanup_session(client_id)

    async def _del_all_subscriptions(self, session: Session) -> None:
        """Override: stock amqtt scans every filter of every client to drop one
        session's subscriptions. The index drops them directly."""
        self.index.remove_client(session.client_id)
        self.outboxes.pop(session.client_id, None)

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        """Override: index removal instead of a scan of the filter's list."""
        return int(self.index.remove(session.client_id, a_filter))

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Override (used by amqtt's plugin context): index insertion instead of
        a scan of every subscriber of the filter; the ACL still applies."""
        topic_filter, qos = subscription
        if not is_valid_filter(topic_filter):
            return _SUBACK_FAILURE
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return _SUBACK_FAILURE
        granted = min(qos, _MAX_GRANTED_QOS)
        self.index.add(session.client_id, topic_filter, granted)
        return granted

    # -- packets -------------------------------------------------------------

    async def subscribe(self, handler: FleetHandler, packet_id: int,
                        topics: list[tuple[str, int]]) -> None:
        """SUBSCRIBE: ACL per filter, SUBACK, then the retained messages of the
        new subscriptions that the client may receive."""
        session = handler.session
        codes = [await self.add_subscription(item, session) for item in topics]
        await handler._send_packet(SubackPacket.build(packet_id, codes))
        for (topic_filter, _), code in zip(topics, codes, strict=True):
            if code == _SUBACK_FAILURE:
                event(log, "subscribe_denied", logging.WARNING, client=session.client_id,
                      filter=topic_filter)
                continue
            await self._send_retained(handler, topic_filter, code)

    async def _send_retained(self, handler: FleetHandler, topic_filter: str, qos: int) -> None:
        """Stock amqtt sends retained messages matching *any* client's filter on
        connect, with no ACL check. Here: only for the new filter, only topics
        the client may receive, and an exact filter is one lookup."""
        session = handler.session
        if is_wildcard(topic_filter):
            candidates = [m for t, m in self._retained_messages.items()
                          if filter_matches(topic_filter, t)]
        else:
            found = self._retained_messages.get(topic_filter)
            candidates = [found] if found is not None else []
        for retained in candidates:
            if not await self._topic_filtering(session, retained.topic, Action.RECEIVE):
                continue
            message = Outgoing(retained.topic, bytes(retained.data),
                               min(qos, retained.qos or 0), retain=True)
            sends, _ = handler.outbox.offer(message, connected=True)
            handler.send(sends)

    async def unsubscribe(self, handler: FleetHandler, packet_id: int, topics: list[str]) -> None:
        """UNSUBSCRIBE, then UNSUBACK."""
        for topic_filter in topics:
            self.index.remove(handler.session.client_id, topic_filter)
        await handler._send_packet(UnsubackPacket.build(packet_id))

    async def on_publish(self, handler: FleetHandler, packet: PublishPacket) -> bool:
        """An incoming PUBLISH. Returns False when the connection was closed
        for a protocol violation; a denied publish is acked and dropped."""
        session = handler.session
        self.metrics.messages_in += 1
        topic = packet.topic_name or ""
        if not topic or is_wildcard(topic):
            event(log, "publish_invalid_topic", logging.WARNING, client=session.client_id,
                  topic=topic)
            await handler.handle_connection_closed()
            return False
        if not await self._topic_filtering(session, topic, Action.PUBLISH):
            self.metrics.drops["acl_denied"] += 1
            event(log, "publish_denied", logging.WARNING, client=session.client_id, topic=topic)
            return True
        await self.publish(session, topic, bytes(packet.data or b""), packet.qos or 0,
                           retain=packet.retain_flag)
        return True

    async def publish(self, sender: Session | None, topic: str, payload: bytes, qos: int,
                      *, retain: bool) -> None:
        """Store a retained message if asked, and route to the subscribers."""
        if retain:
            await self.retain_message(sender, topic, payload, qos)
        self.route(topic, payload, qos)

    def route(self, topic: str, payload: bytes, qos: int) -> None:
        """Hand a message to each matching session's outbox, at
        min(publish QoS, subscription QoS). Override of stock behaviour, which
        delivers at the subscription's QoS whatever the publish QoS was."""
        variants: dict[int, Outgoing] = {}
        for client_id, granted in self.index.match(topic):
            entry = self._sessions.get(client_id)
            outbox = self.outboxes.get(client_id)
            if entry is None or outbox is None:
                continue
            session, handler = entry
            deliver_qos = min(qos, granted)
            message = variants.get(deliver_qos)
            if message is None:
                message = variants[deliver_qos] = Outgoing(topic, payload, deliver_qos)
            connected = session.transitions.state == "connected" and not handler.superseded
            sends, dropped = outbox.offer(message, connected=connected)
            if sends:
                handler.send(sends)
            if dropped is not None:
                self.metrics.drops["queue_full"] += 1
                event(log, "queue_full_drop", logging.WARNING, client=client_id,
                      topic=dropped.topic, max_queued=self.limits.max_queued)
            elif not connected and deliver_qos == 0:
                self.metrics.drops["offline_qos0"] += 1

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """Override: messages from amqtt's plugin API (``broadcast_message``)
        take the indexed route instead of a scan of every subscription."""
        broadcast = await self._broadcast_queue.get()
        self.route(broadcast["topic"], bytes(broadcast["data"] or b""), broadcast.get("qos") or 0)

    # -- administration -------------------------------------------------------

    def disconnect_client(self, client_id: str, reason: str) -> bool:
        """Close a client's connection (its will is published)."""
        writer = self.writers.get(client_id)
        if writer is None or not hasattr(writer, "abort"):
            return False
        self.metrics.disconnects[reason] += 1
        event(log, "closing", logging.WARNING, client=client_id, reason=reason)
        writer.abort()
        return True
