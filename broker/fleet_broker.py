"""The broker's core: sessions, the subscription index, retained messages
and routing, driven by packets the codec has already checked.

Every handler here is a plain call made in line by the connection that read
the packet (``broker.connection``): authentication and the ACL are pure
(``broker.access``), routing hands messages to the sessions' outboxes
(``broker.outbox``), and writing is a transport write. Nothing per client
runs as a task.

This core replaced amqtt 0.12.1's ``Broker`` and its protocol handler. Each
amqtt defect it had to override then is a behaviour here, kept by a test
under ``tests/broker`` that runs stock amqtt too (``stock_amqtt_defect``):
a session is taken over or wiped only after the new client authenticated,
CONNECT has a deadline, the will topic is checked against the ACL, retained
messages go only to clients the ACL lets receive them, a message is
delivered at min(publish QoS, subscription QoS), an unacknowledged QoS 1
message is kept until it is acknowledged, and a QoS 1 PUBLISH is
acknowledged only after it was routed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from broker.access import Access
from broker.connection import MQTTConnection
from broker.expiry import SessionExpiry
from broker.metrics import Metrics
from broker.outbox import Outbox, Outgoing
from broker.routing import SubscriptionIndex
from broker.session import Session
from epns.acl import Action
from epns.broker_config import LimitSettings
from epns.errors import IdentityError, MalformedPacket
from epns.identity import Identity
from epns.logs import Throttle, event, throttled_event
from epns.mqtt import (
    SUBACK_FAILURE,
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    encode,
    puback_bytes,
)
from epns.mqtt.filters import is_wildcard
from epns.topics import filter_matches

log = logging.getLogger(__name__)

# The outbox implements QoS 1 delivery; QoS 2 subscriptions are granted QoS 1,
# which MQTT 3.1.1 allows (section 3.9.3).
_MAX_GRANTED_QOS = 1
_EXPIRY_INTERVAL = 1.0
_PINGRESP = encode(Pingresp())
# A client's fault (a denied publish, a refused filter) is logged once a
# second per kind and client, with the count held back: a client that
# repeats it cannot fill the log.
_faults = Throttle(1.0)
_refusals = Throttle(1.0)


@dataclass(frozen=True, slots=True)
class _Retained:
    payload: bytes
    qos: int


class FleetBroker:
    """Sessions and routing for every connection the hub accepts."""

    def __init__(self, limits: LimitSettings, metrics: Metrics, access: Access) -> None:
        self.limits = limits
        self.metrics = metrics
        self.access = access
        self.index = SubscriptionIndex()
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, _Retained] = {}
        self.expiry = SessionExpiry(limits.session_expiry)
        self._expiry_task: asyncio.Task[None] | None = None
        metrics.sessions = lambda: len(self.sessions)
        metrics.subscriptions = lambda: len(self.index)

    async def start(self) -> None:
        """Start dropping expired offline sessions."""
        self._expiry_task = asyncio.create_task(self._expire_forever())

    async def shutdown(self) -> None:
        """Stop the expiry task (the hub closes the connections)."""
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            await asyncio.gather(self._expiry_task, return_exceptions=True)

    # -- packets in -------------------------------------------------------------

    def on_packet(self, conn: MQTTConnection, packet: Packet) -> None:
        """One packet from a client, in the order it sent them."""
        session = conn.session
        if session is None:
            # The decoder lets only CONNECT come first (MQTT-3.1.0-1).
            assert isinstance(packet, Connect)
            self._connect(conn, packet)
            return
        match packet:
            case Puback(packet_id=packet_id):
                freed = session.outbox.acked(packet_id)
                if freed:
                    conn.send(freed)
            case Publish():
                self._on_publish(conn, session, packet)
            case Pingreq():
                conn.write(_PINGRESP)
            case Subscribe():
                self._subscribe(conn, session, packet)
            case Unsubscribe(packet_id=packet_id, topics=topics):
                for topic_filter in topics:
                    if self.index.remove(session.client_id, topic_filter):
                        session.subscription_count -= 1
                conn.write(encode(Unsuback(packet_id)))
            case Pubrel(packet_id=packet_id):
                if session.qos2_pending:
                    session.qos2_pending.discard(packet_id)
                    if not session.qos2_pending:
                        session.qos2_pending = None
                conn.write(encode(Pubcomp(packet_id)))
            case Disconnect():
                conn.graceful = True
                conn.close()
            case Pubrec() | Pubcomp():
                pass  # the broker never sends QoS 2, so there is nothing to complete

    # -- CONNECT ------------------------------------------------------------------

    def _connect(self, conn: MQTTConnection, connect: Connect) -> None:
        """Authenticate, check the will, adopt the session, CONNACK. Stock
        amqtt took over (or wiped) an existing session *before* the client
        authenticated: anyone who knew an agent id could disconnect that
        agent or drop its queued commands. Here nothing existing is touched
        until the client has proven who it is."""
        if not connect.client_id and not connect.clean_session:
            self._refuse(conn, connect, ConnackCode.IDENTIFIER_REJECTED,
                         "an empty client id needs a clean session [MQTT-3.1.3-8]",
                         "empty_client_id")
            return
        try:
            identity = self.access.authenticate(connect, conn.certificate)
        except IdentityError as exc:
            self._refuse(conn, connect, exc.connack_code, str(exc), _snake(type(exc).__name__))
            return
        will = connect.will
        if will is not None and not self.access.allows(identity, Action.PUBLISH, will.topic):
            # Stock amqtt never checked the will topic: a client could have the
            # broker publish its will where it may not publish itself.
            self._refuse(conn, connect, ConnackCode.NOT_AUTHORIZED,
                         f"will topic {will.topic!r} is not allowed", "will_denied")
            return
        session, resumed = self._adopt(connect, identity)
        session.will = will
        session.connection = conn
        conn.session = session
        conn.idle_limit = conn.hub.idle_limit(connect.keep_alive)
        conn.hub.watch_idle(conn)
        conn.write(encode(Connack(ConnackCode.ACCEPTED, session_present=resumed)))
        self.metrics.connected(time.monotonic())
        event(log, "connected", client=session.client_id, peer=conn.peer_name,
              listener=conn.listener, role=identity.role, auth=identity.method,
              # Which certificate or token: a renewed identity shows here.
              id=identity.serial or identity.token_id,
              resumed=resumed, keepalive=connect.keep_alive)
        conn.send(session.outbox.resume())

    def _refuse(self, conn: MQTTConnection, connect: Connect, code: int, reason: str,
                kind: str) -> None:
        """CONNACK ``code`` and close; one log line per client, kind of
        refusal and second: the log still says which agent is refused and
        why, and one that reconnects in a loop cannot fill it."""
        self.metrics.refusals[kind] += 1
        throttled_event(_refusals, (kind, connect.client_id), time.monotonic(), log, "refused",
                        client=connect.client_id, peer=conn.peer_name, listener=conn.listener,
                        reason=reason, connack=code)
        conn.write(encode(Connack(code)))
        conn.close()

    def _adopt(self, connect: Connect, identity: Identity) -> tuple[Session, bool]:
        """The session this authenticated client continues, or a new one;
        and whether it continues one (CONNACK's session present)."""
        client_id = connect.client_id
        self.expiry.forget(client_id)
        existing = self.sessions.get(client_id)
        if existing is not None and existing.connection is not None:
            self._take_over(existing.connection)
        if existing is not None and not connect.clean_session and not existing.clean:
            existing.identity = identity
            return existing, True
        if existing is not None:
            self._drop_session(client_id)
        session = Session(client_id, identity,
                          Outbox(self.limits.max_inflight, self.limits.max_queued),
                          clean=connect.clean_session)
        self.sessions[client_id] = session
        return session, False

    def _take_over(self, old: MQTTConnection) -> None:
        """A client reconnected while its old connection is still open (a
        half-open socket, typically): close the old one, without its will."""
        old.superseded = True
        event(log, "takeover", client=old.client_id)
        self.metrics.disconnects["takeover"] += 1
        old.abort()

    # -- the end of a connection ---------------------------------------------------

    def connection_lost(self, conn: MQTTConnection) -> None:
        """A connection closed. Its will is published unless it sent
        DISCONNECT; a clean session goes with it, a stored one waits for
        ``limits.session_expiry``."""
        session = conn.session
        if session is None or conn.superseded or session.connection is not conn:
            return
        session.connection = None
        will = session.will
        if will is not None and not conn.graceful:
            self.publish(will.topic, will.message, will.qos, retain=will.retain,
                         sender=session.client_id)
        self.metrics.disconnects["client" if conn.graceful else "lost"] += 1
        event(log, "disconnected", client=session.client_id, graceful=conn.graceful,
              will=will is not None and not conn.graceful)
        if session.clean:
            self._drop_session(session.client_id)
        else:
            self.expiry.disconnected(session.client_id, time.monotonic())

    def _drop_session(self, client_id: str) -> None:
        self.expiry.forget(client_id)
        self.index.remove_client(client_id)
        self.sessions.pop(client_id, None)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(_EXPIRY_INTERVAL)
            self.expire_sessions(time.monotonic())

    def expire_sessions(self, now: float) -> int:
        """Drop the sessions offline for ``limits.session_expiry``."""
        expired = 0
        for client_id in self.expiry.due(now):
            session = self.sessions.get(client_id)
            if session is None or session.connected:
                continue  # gone already, or back (forget() came first)
            event(log, "session_expired", client=client_id)
            self._drop_session(client_id)
            expired += 1
        return expired

    # -- PUBLISH --------------------------------------------------------------------

    def _on_publish(self, conn: MQTTConnection, session: Session, packet: Publish) -> None:
        """Route first, then acknowledge: a PUBACK means subscribers have it.
        A denied publish is acknowledged and dropped (MQTT 3.1.1 has no way
        to refuse one), counted and logged."""
        self.metrics.messages_in += 1
        packet_id = packet.packet_id
        if packet.qos == 2 and session.qos2_pending and packet_id in session.qos2_pending:
            assert packet_id is not None  # the decoder gives every QoS 2 PUBLISH an id
            conn.write(encode(Pubrec(packet_id)))  # resent before PUBREL: routed already
            return
        allowed = self.access.allows(session.identity, Action.PUBLISH, packet.topic)
        if allowed:
            self.publish(packet.topic, packet.payload, packet.qos, retain=packet.retain,
                         sender=session.client_id)
        else:
            self.metrics.drops["acl_denied"] += 1
            _fault("publish_denied", session.client_id, topic=packet.topic)
        if packet.qos == 1 and packet_id is not None:
            conn.write(puback_bytes(packet_id))
        elif packet.qos == 2 and packet_id is not None:
            if allowed:
                # Kept until PUBREL so that a resent PUBLISH is not routed
                # twice; a denied one is not routed at all, so not kept.
                if session.qos2_pending is None:
                    session.qos2_pending = set()
                if len(session.qos2_pending) >= self.limits.max_inflight:
                    conn.hub.on_violation(conn, MalformedPacket(
                        f"more than {self.limits.max_inflight} QoS 2 messages unreleased "
                        "(limits.max_inflight)"))
                    return
                session.qos2_pending.add(packet_id)
            conn.write(encode(Pubrec(packet_id)))

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool,
                sender: str) -> None:
        """Store or clear a retained message if asked, and route to the subscribers."""
        if retain:
            if not payload:  # an empty retained message clears the topic (MQTT-3.3.1-10, -11)
                self.retained.pop(topic, None)
            elif topic in self.retained or len(self.retained) < self.limits.max_retained:
                self.retained[topic] = _Retained(payload, qos)
            else:
                self.metrics.drops["retained_limit"] += 1
                _fault("retained_limit", sender, topic=topic,
                       max_retained=self.limits.max_retained)
        self.route(topic, payload, qos)

    def route(self, topic: str, payload: bytes, qos: int) -> None:
        """Hand a message to each matching session's outbox, at
        min(publish QoS, subscription QoS) (MQTT 3.1.1 section 3.8.4; stock
        amqtt delivered at the subscription's QoS whatever was published)."""
        variants: dict[int, Outgoing] = {}
        for client_id, granted in self.index.match(topic):
            session = self.sessions.get(client_id)
            if session is None:
                continue
            deliver_qos = min(qos, granted)
            message = variants.get(deliver_qos)
            if message is None:
                message = variants[deliver_qos] = Outgoing(topic, payload, deliver_qos)
            conn = session.connection
            if deliver_qos == 0 and conn is not None and conn.writes_paused:
                # A subscriber that does not read its QoS 0 messages loses
                # them (what QoS 0 allows), not the broker's memory.
                self.metrics.drops["slow_qos0"] += 1
                continue
            sends, dropped = session.outbox.offer(message, connected=conn is not None)
            if sends and conn is not None:
                conn.send(sends)
            if dropped is not None:
                self.metrics.drops["queue_full"] += 1
                event(log, "queue_full_drop", logging.WARNING, client=client_id,
                      topic=dropped.topic, max_queued=self.limits.max_queued)
            elif conn is None and deliver_qos == 0:
                self.metrics.drops["offline_qos0"] += 1

    # -- SUBSCRIBE ------------------------------------------------------------------

    def _subscribe(self, conn: MQTTConnection, session: Session, packet: Subscribe) -> None:
        """ACL per filter, SUBACK, then the retained messages of the new
        subscriptions that the client may receive."""
        codes = [self._grant(session, topic_filter, qos) for topic_filter, qos in packet.topics]
        conn.write(encode(Suback(packet.packet_id, tuple(codes))))
        for (topic_filter, _), code in zip(packet.topics, codes, strict=True):
            if code != SUBACK_FAILURE:
                self._send_retained(conn, session, topic_filter, code)

    def _grant(self, session: Session, topic_filter: str, qos: int) -> int:
        """The SUBACK code of one filter: the granted QoS, or 0x80."""
        client_id = session.client_id
        # The decoder refused invalid filters (MQTT-4.7.1-2, -3) already.
        if not self.access.allows(session.identity, Action.SUBSCRIBE, topic_filter):
            _fault("subscribe_denied", client_id, filter=topic_filter)
            return SUBACK_FAILURE
        known = self.index.has(client_id, topic_filter)
        if not known and session.subscription_count >= self.limits.max_subscriptions:
            self.metrics.refusals["subscription_limit"] += 1
            _fault("subscription_limit", client_id, filter=topic_filter,
                   max_subscriptions=self.limits.max_subscriptions)
            return SUBACK_FAILURE
        granted = min(qos, _MAX_GRANTED_QOS)
        self.index.add(client_id, topic_filter, granted)
        if not known:
            session.subscription_count += 1
        return granted

    def _send_retained(self, conn: MQTTConnection, session: Session, topic_filter: str,
                       qos: int) -> None:
        """Stock amqtt sent a connecting client every retained message matching
        *any* client's filter, with no ACL check. Here: only for the new
        filter, only topics the client may receive, an exact filter in one
        lookup; with RETAIN set (MQTT-3.3.1-8)."""
        if is_wildcard(topic_filter):
            candidates = [(topic, kept) for topic, kept in self.retained.items()
                          if filter_matches(topic_filter, topic)]
        else:
            found = self.retained.get(topic_filter)
            candidates = [(topic_filter, found)] if found is not None else []
        messages = [Outgoing(topic, kept.payload, min(qos, kept.qos), retain=True)
                    for topic, kept in candidates
                    if self.access.allows(session.identity, Action.RECEIVE, topic)]
        if messages:
            conn.send(session.outbox.replay(messages))

    # -- administration ---------------------------------------------------------------

    def disconnect_client(self, client_id: str, reason: str) -> bool:
        """Close a client's connection (its will is published)."""
        session = self.sessions.get(client_id)
        if session is None or session.connection is None:
            return False
        self.metrics.disconnects[reason] += 1
        event(log, "closing", logging.WARNING, client=client_id, reason=reason)
        session.connection.abort()
        return True


def _fault(name: str, client_id: str, **fields: Any) -> None:
    """Log a client's fault once a second per kind and client."""
    throttled_event(_faults, (name, client_id), time.monotonic(), log, name, client=client_id,
                    **fields)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
