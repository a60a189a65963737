"""One client's MQTT session: what outlives its connections.

A session is the client's identity, its will, its subscriptions (kept in the
broker's index, ``broker.routing``), its outgoing messages (``broker.outbox``)
and the QoS 2 packet ids it has sent and not yet released. It is a plain
object of slots, about 0.3 KiB: amqtt 0.12.1's ``Session`` was 23 KiB (a
``transitions`` state machine and two queues per client), which this
broker no longer uses at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.outbox import Outbox
from epns.identity import Identity
from epns.mqtt import Will

if TYPE_CHECKING:
    from broker.connection import MQTTConnection


class Session:
    """A client's session; ``connection`` is None while it is offline."""

    __slots__ = ("clean", "client_id", "connection", "identity", "outbox", "qos2_pending",
                 "subscription_count", "will")

    def __init__(self, client_id: str, identity: Identity, outbox: Outbox, *,
                 clean: bool) -> None:
        self.client_id = client_id
        self.identity = identity
        self.outbox = outbox
        self.clean = clean
        self.will: Will | None = None
        self.connection: MQTTConnection | None = None
        self.subscription_count = 0
        # Incoming QoS 2 packet ids routed and not yet released by PUBREL
        # (MQTT 3.1.1 section 4.3.3, "method A"); made on first use.
        self.qos2_pending: set[int] | None = None

    @property
    def connected(self) -> bool:
        """True while a connection holds the session."""
        return self.connection is not None
