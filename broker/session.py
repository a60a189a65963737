"""The broker's per-client session: amqtt's Session, lean enough for 19,000.

amqtt 0.12.1's ``Session.__init__`` builds a ``transitions.Machine`` for every
session (about 15 KiB, 230 allocations and 0.23 ms of CPU each, for three
states) and two ``asyncio.Queue`` that the epns broker never uses: its outbox
(``broker.outbox``) queues outgoing messages and its handler routes incoming
ones directly. A stock session is 23 KiB of Python objects, this one 0.65 KiB
(tests/broker/test_session.py; docs/benchmark-history.md, "Broker tuning for issue 6").

``FleetSession`` keeps every attribute amqtt's code and plugins read, with
the state as a plain string. amqtt's code reads ``session.transitions.state``
and calls ``session.transitions.connect()``; here the session answers those
itself (``transitions`` is the session). The two queues are created only if
something asks for them.
"""

from __future__ import annotations

import time
from asyncio import Queue
from collections import OrderedDict
from math import floor
from typing import TYPE_CHECKING, Any

from amqtt.session import (
    ApplicationMessage,
    IncomingApplicationMessage,
    OutgoingApplicationMessage,
    Session,
)

if TYPE_CHECKING:
    import ssl

NEW = "new"
CONNECTED = "connected"
DISCONNECTED = "disconnected"


class FleetSession(Session):
    """An MQTT session with a plain state attribute instead of a state machine."""

    def __init__(self) -> None:
        # Session.__init__ is not called on purpose: it builds the Machine and
        # the queues. The attributes are the same (tests/broker/test_session.py
        # compares them with a stock Session's, so an amqtt upgrade that adds
        # one fails there).
        self.state = NEW
        self.remote_address: str | None = None
        self.remote_port: int | None = None
        self.client_id: str | None = None
        self.clean_session: bool | None = None
        self.will_flag: bool = False
        self.will_message: bytes | bytearray | None = None
        self.will_qos: int | None = None
        self.will_retain: bool | None = None
        self.will_topic: str | None = None
        self.keep_alive: int = 0
        self.publish_retry_delay: int = 0
        self.broker_uri: str | None = None
        self.username: str | None = None
        self.password: str | None = None
        self.cafile: str | None = None
        self.capath: str | None = None
        self.cadata: bytes | None = None
        self._packet_id: int = 0
        self.parent: int = 0
        self.last_connect_time: int | None = None
        self.ssl_object: ssl.SSLObject | None = None
        self.last_disconnect_time: int | None = None
        self.attributes: dict[str, Any] = {}
        self.inflight_out: OrderedDict[int, OutgoingApplicationMessage] = OrderedDict()
        self.inflight_in: OrderedDict[int, IncomingApplicationMessage] = OrderedDict()
        self._queues: tuple[Queue[ApplicationMessage], Queue[ApplicationMessage]] | None = None
        self.is_anonymous: bool = False

    # -- the state machine amqtt expects at session.transitions ---------------

    @property
    def transitions(self) -> FleetSession:
        """amqtt reads ``session.transitions.state`` and calls
        ``session.transitions.connect()``: the session is its own machine."""
        return self

    def is_connected(self) -> bool:
        """True between connect() and disconnect()."""
        return self.state == CONNECTED

    def connect(self) -> None:
        """new or disconnected -> connected (amqtt's transition of that name)."""
        if self.state == CONNECTED:
            raise RuntimeError("the session is connected already")
        self.state = CONNECTED
        self.last_connect_time = floor(time.time())
        self.last_disconnect_time = None

    def disconnect(self) -> None:
        """-> disconnected, from any state (amqtt's transition of that name)."""
        self.state = DISCONNECTED
        self.last_disconnect_time = floor(time.time())

    # -- the queues, on demand ---------------------------------------------------

    def _queue_pair(self) -> tuple[Queue[ApplicationMessage], Queue[ApplicationMessage]]:
        if self._queues is None:
            self._queues = (Queue(), Queue())
        return self._queues

    @property
    def retained_messages(self) -> Queue[ApplicationMessage]:
        """amqtt's offline queue; the broker's outbox replaces it."""
        return self._queue_pair()[0]

    @property
    def delivered_message_queue(self) -> Queue[ApplicationMessage]:
        """amqtt's incoming queue; the broker's handler routes directly."""
        return self._queue_pair()[1]

    def clear_queues(self) -> None:
        """Empty the queues if they were ever created."""
        if self._queues is not None:
            super().clear_queues()
