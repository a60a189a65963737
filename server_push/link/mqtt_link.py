"""The server's one MQTT session to the broker, as the server role.

A thin adapter around aiomqtt: it keeps the session up (persistent, so the
broker queues agents' events while the server is away), hands every message to
one handler, and publishes commands at QoS 1, returning only once the broker
has taken them (PUBACK). aiomqtt's errors become BrokerUnavailable here.

The link supervises itself, since every agent's push depends on it:

- a handler that raises on one message fails that message alone: it is
  logged (at most once per ``FAILURE_LOG_INTERVAL`` and topic) and counted,
  and the next message is handled;
- whatever ends a session (the broker, the network, a bug) is logged at
  error with its reason, counted in ``LinkHealth``, shown by ``/health``,
  and the session starts again after a jittered backoff. Commands staged
  meanwhile are published by ``on_connect`` (the outbox's flush).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from epns import tls
from epns.errors import BrokerUnavailable
from epns.logs import Throttle, event
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
FAILURE_LOG_INTERVAL = 60.0

OnMessage = Callable[[str, bytes], Awaitable[None]]
OnConnect = Callable[[], Awaitable[None]]


@dataclass
class LinkHealth:
    """What the link says of itself: to ``/health``, the metrics and the
    operator's notification. ``down_since`` and ``reason`` are None while up."""

    down_since: float | None
    reason: str | None = "not connected yet"
    restarts: int = 0
    handler_failures: int = 0


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
        self.health = LinkHealth(down_since=time.time())
        self._failure_log = Throttle(FAILURE_LOG_INTERVAL)

    async def run(self) -> None:
        """Connect, consume and reconnect with jittered backoff, until cancelled."""
        failures = 0
        while True:
            was_up = False
            try:
                await self._session()
                reason = "the broker closed the session"
            except aiomqtt.MqttError as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # the link must outlive any one failure
                reason = f"{type(exc).__name__}: {exc}"
                log.error("broker link session failed", exc_info=True)
            finally:
                was_up = self.connected.is_set()
                self._client = None
                self.connected.clear()
            failures = 1 if was_up else failures + 1
            self._down(reason, was_up)
            await asyncio.sleep(random.uniform(0.5, min(RETRY_CAP, 2.0 ** min(failures, 5))))  # noqa: S311 - jitter

    def _down(self, reason: str, was_up: bool) -> None:
        health = self.health
        if was_up:
            health.down_since = time.time()
            health.restarts += 1
        health.reason = reason
        event(log, "broker_link_down", logging.ERROR, broker=self._address(), error=reason,
              down_for=f"{time.time() - (health.down_since or time.time()):.0f}s",
              action="reconnecting with backoff")
        self._current = (self._current + 1) % len(self._addresses)

    async def _session(self) -> None:
        settings = self._settings
        context = tls.client_context(settings.ca, settings.cert, settings.key,
                                     alpn=tls.MQTT_ALPN)
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
            self.health.down_since = self.health.reason = None
            event(log, "broker_link_up", broker=self._address())
            await self._on_connect()
            async for message in client.messages:
                payload = message.payload
                raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
                topic = message.topic.value
                try:
                    await self._on_message(topic, raw)
                except Exception:  # one message must never end the link
                    self._handler_failed(topic)

    def _handler_failed(self, topic: str) -> None:
        self.health.handler_failures += 1
        admitted, held = self._failure_log.admit((topic,), time.time())
        if admitted:
            log.error("message handler failed on %s; the message is dropped and the link "
                      "goes on (%d more on this topic since the last line)", topic, held,
                      exc_info=True)

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
