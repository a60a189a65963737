"""The server's one MQTT session to the broker, as the server role.

A thin adapter around aiomqtt: it keeps the session up (persistent, so the
broker queues agents' events while the server is away), hands every message to
one handler, and publishes commands at QoS 1, returning only once the broker
has taken them (PUBACK). aiomqtt's errors become BrokerUnavailable here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from epns import tls
from epns.errors import BrokerUnavailable
from epns.logs import event
from epns.server_config import MqttSettings

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("epns/v1/agents/+/presence", "epns/v1/agents/+/evt")


def shared_subscriptions(group: str) -> tuple[str, ...]:
    """Several replicas in ``shared`` mode: each event goes to one of the group
    (``$share``, Mosquitto); presence goes to all, as only a plain
    subscription gets the retained births, and ``handled.py`` applies it once."""
    return (SUBSCRIPTIONS[0], f"$share/{group}/{SUBSCRIPTIONS[1]}")

PUBLISH_TIMEOUT = 10.0
RETRY_CAP = 30.0

OnMessage = Callable[[str, bytes], Awaitable[None]]
OnConnect = Callable[[], Awaitable[None]]


class BrokerLink:
    """Keeps the server's session up; ``publish`` fails fast while it is down."""

    def __init__(self, settings: MqttSettings, on_message: OnMessage,
                 on_connect: OnConnect, *, subscriptions: tuple[str, ...] = SUBSCRIPTIONS,
                 clean_session: bool = False) -> None:
        self._settings = settings
        self._subscriptions = subscriptions
        self._clean_session = clean_session
        self._on_message = on_message
        self._on_connect = on_connect
        # A clustered broker's nodes: a failed or lost session moves to the next.
        self._addresses = settings.addresses()
        self._current = 0
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Connect, consume and reconnect with jittered backoff, until cancelled."""
        failures = 0
        while True:
            try:
                await self._session()
                failures = 0
            except aiomqtt.MqttError as exc:
                failures += 1
                event(log, "broker_link_down", logging.WARNING, broker=self._address(),
                      error=str(exc))
                self._current = (self._current + 1) % len(self._addresses)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(random.uniform(0.5, min(RETRY_CAP, 2.0 ** min(failures, 5))))  # noqa: S311 - jitter

    async def _session(self) -> None:
        settings = self._settings
        context = tls.client_context(settings.ca, settings.cert, settings.key)
        host, port = self._addresses[self._current]
        async with aiomqtt.Client(
            host, port, identifier=settings.client_id, clean_session=self._clean_session,
            tls_context=context, keepalive=settings.keepalive, timeout=PUBLISH_TIMEOUT,
        ) as client:
            for topic in self._subscriptions:
                granted = await client.subscribe(topic, qos=1)
                if any(_refused(code) for code in granted):
                    # A NATS node answers 0x80 while JetStream re-elects after a
                    # node died: a session without its subscriptions would be
                    # deaf, so this one ends and the next address is tried.
                    raise aiomqtt.MqttError(f"the broker refused the subscription {topic}")
            self._client = client
            self.connected.set()
            event(log, "broker_link_up", broker=self._address())
            await self._on_connect()
            async for message in client.messages:
                payload = message.payload
                raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
                await self._on_message(message.topic.value, raw)

    def _address(self) -> str:
        host, port = self._addresses[self._current]
        return f"{host}:{port}"

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        client = self._client
        if client is None:
            raise BrokerUnavailable(f"not connected to the broker at {self._address()}")
        try:
            await client.publish(topic, payload, qos=1, timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"publish to {topic} failed: {exc}") from exc


def _refused(code: int | ReasonCode) -> bool:
    """A SUBACK return code of failure (0x80 in MQTT 3.1.1)."""
    return (code.value if isinstance(code, ReasonCode) else code) >= 0x80
