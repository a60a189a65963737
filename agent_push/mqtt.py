"""A thin adapter that drives paho-mqtt from the asyncio event loop.

paho owns the MQTT 3.1.1 state (packet ids, QoS 1 flows); the event loop
owns the socket. Every paho callback does one thing: hand its result to the
loop with ``call_soon_threadsafe`` (the model is aiomqtt v2's client). Socket
readiness drives ``loop_read``/``loop_write``.

The keep-alive is not paho's: ``epns.liveness`` decides when to ping (on
time, not up to a check interval late) and when a silent path is dead (no
answer to a ping within seconds, not a whole keep-alive later), and this
adapter only carries it out. paho's ``loop_misc`` is never called.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from epns.errors import MqttRefused
from epns.liveness import Liveness, Step

# paho 2 reports a 3.1.1 CONNACK code as an MQTT 5 reason code; map it back.
_CONNACK_311 = {0x80: 3, 0x84: 1, 0x85: 2, 0x86: 4, 0x87: 5, 0x88: 3}
CONNACK_CAUSES = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the client id does not match the agent's identity",
    3: "the broker is unavailable",
    4: "the token was refused (malformed, forged or expired)",
    5: "not authorized: no certificate or token the broker accepts, or the agent is revoked",
}


@dataclass(frozen=True)
class Message:
    """An MQTT message as the agent receives it."""

    topic: str
    payload: bytes
    retain: bool


class _PreparedSocketClient(paho.Client):
    """paho opens its own TCP socket, which can neither go through a
    python-socks CONNECT tunnel nor bound each step with its own timeout. This
    subclass hands paho the socket ``agent_push.dialer`` already opened (TLS
    done) instead; paho's own TLS stays off."""

    prepared: socket.socket | None = None

    def _create_socket_connection(self) -> socket.socket:
        sock, self.prepared = self.prepared, None
        if sock is None:
            raise OSError("no prepared socket to hand to paho")
        return sock


class MqttLink:
    """One MQTT connection over a prepared socket."""

    def __init__(self, client_id: str, *, keepalive: int, will: tuple[str, bytes],
                 credentials: tuple[str, str] | None = None,
                 websocket_path: str | None = None,
                 on_alive: Callable[[float], None] | None = None,
                 ping_interval: float | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.keepalive = keepalive
        # Pings at ``ping_interval`` (learnt, epns.heartbeat) within the MQTT keep-alive.
        self._ping_interval = min(keepalive, ping_interval or keepalive)
        self.liveness = Liveness(self._ping_interval, time.monotonic())
        self._recheck = asyncio.Event()
        # Called when a ping is answered, with how long the path had been
        # silent: once per ping interval on an idle link.
        self._on_alive = on_alive
        # Set when the link gave a silent path up: how long it had been silent.
        self.lost_idle: float | None = None
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._connack: asyncio.Future[int] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self._fd = -1
        client = _PreparedSocketClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
            transport="websockets" if websocket_path else "tcp")
        if websocket_path:
            client.ws_set_options(path=websocket_path)
        if credentials is not None:
            client.username_pw_set(*credentials)
        client.will_set(will[0], will[1], qos=1, retain=True)
        # paho must never retry on its own: reconnecting is the agent's job.
        client.reconnect_delay_set(1, 1)
        self._client = client
        self._wire_callbacks()

    # -- callbacks: each only hands its result to the event loop -------------

    def _wire_callbacks(self) -> None:
        client, post = self._client, self._post
        client.on_connect = lambda _c, _u, _f, rc, _p: post(self._connacked, rc)
        client.on_message = lambda _c, _u, msg: post(self._received, msg)
        client.on_subscribe = lambda _c, _u, mid, codes, _p: post(self._resolve, mid, codes)
        client.on_publish = lambda _c, _u, mid, _rc, _p: post(self._resolve, mid, None)
        client.on_disconnect = lambda _c, _u, _f, rc, _p: post(self._lost, rc)
        # Socket bookkeeping must happen before paho closes the descriptor, so it
        # runs at once when paho is on the loop's thread (everything but connect).
        client.on_socket_open = lambda _c, _u, sock: self._now(self._watch, sock)
        client.on_socket_close = lambda _c, _u, sock: self._now(self._unwatch, sock)
        client.on_socket_register_write = lambda _c, _u, sock: self._now(self._want_write, sock)
        client.on_socket_unregister_write = lambda _c, _u, sock: self._now(self._no_write, sock)

    def _post(self, handler: Callable[..., None], *args: Any) -> None:
        self._loop.call_soon_threadsafe(handler, *args)

    def _now(self, handler: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            handler(*args)
        else:
            self._post(handler, *args)

    def _connacked(self, rc: Any) -> None:
        code = int(getattr(rc, "value", rc))
        if not self._connack.done():
            self._connack.set_result(_CONNACK_311.get(code, code))

    def _received(self, msg: paho.MQTTMessage) -> None:
        self.messages.put_nowait(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _resolve(self, mid: int, value: Any) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(value)

    def _lost(self, rc: Any) -> None:
        if not self.closed.done():
            self.closed.set_result(str(rc))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost"))
        self._pending.clear()

    def _watch(self, sock: Any) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable)

    def _unwatch(self, _sock: Any = None) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1
        self._sock = None

    def _want_write(self, _sock: Any) -> None:
        if self._fd >= 0:
            self._loop.add_writer(self._fd, self._client.loop_write)

    def _no_write(self, _sock: Any) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        code = self._client.loop_read()
        # TLS may hold decrypted bytes that no longer show on the descriptor.
        while self._sock is not None and getattr(self._sock, "pending", lambda: 0)() > 0:
            code = self._client.loop_read()
        if code != paho.MQTT_ERR_SUCCESS:
            return  # a reset or EOF is readable too: it answers no ping
        idle = self.liveness.heard(time.monotonic())
        if idle is not None and self._on_alive is not None:
            self._on_alive(idle)

    def set_ping_interval(self, interval: float) -> None:
        """Ping this often from now on (never less often than the keep-alive)."""
        self.liveness.keepalive = min(self.keepalive, interval)
        self._recheck.set()

    async def _drive_liveness(self) -> None:
        liveness = self.liveness
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(),
                                       max(0.0, liveness.due() - time.monotonic()))
            self._recheck.clear()
            now = time.monotonic()
            step = liveness.check(now)
            if step is Step.PING:
                self._ping()
            elif step is Step.DEAD:
                # A probe after a network change says nothing about how long
                # the path keeps an idle flow: only a scheduled ping does.
                self.lost_idle = None if liveness.probing else liveness.ping_idle
                self._dead(f"the path stopped answering: no reply to a ping within "
                           f"{liveness.answer_within:g} s, nothing heard for "
                           f"{now - liveness.last_heard:.0f} s (a NAT or firewall may have "
                           "forgotten the connection)")
                return

    def _ping(self) -> None:
        # paho has no public "ping now"; its loop_misc pings only by its own
        # clock, late. _send_pingreq is what loop_misc calls.
        self._client._send_pingreq()

    def check_now(self) -> None:
        """Ping at once (the network changed, or the machine woke up): the
        link is given up unless the broker answers within the answer timeout."""
        if self.liveness.probe(time.monotonic()):
            self._ping()
            self._recheck.set()

    def _dead(self, reason: str) -> None:
        """Give the connection up from the inside: the agent sees ``closed``."""
        if not self.closed.done():
            self.closed.set_result(reason)
        sock = self._sock
        self._unwatch()
        if sock is not None:
            sock.close()
        self._lost(reason)

    def _sent(self) -> None:
        self.liveness.sent(time.monotonic())

    # -- the agent's side ------------------------------------------------------

    async def connect(self, sock: socket.socket | ssl.SSLSocket, host: str, port: int,
                      timeout: float) -> None:
        """Send CONNECT over ``sock`` and wait for CONNACK; raises MqttRefused."""
        self._client.prepared = sock
        self._client.connect_timeout = timeout
        # The WebSocket upgrade inside paho's connect() blocks: keep it off the loop.
        await asyncio.to_thread(self._client.connect, host, port, self.keepalive)
        self.liveness = Liveness(self._ping_interval, time.monotonic())
        self._misc = asyncio.create_task(self._drive_liveness())
        try:
            code = await asyncio.wait_for(asyncio.shield(self._connack), timeout)
        except TimeoutError as exc:
            await self.close()
            raise MqttRefused(f"no CONNACK within {timeout:g} s") from exc
        if code != 0:
            await self.close()
            cause = CONNACK_CAUSES.get(code, "unknown refusal")
            raise MqttRefused(f"broker refused the connection (CONNACK {code}): {cause}")

    async def subscribe(self, topic_filters: list[str], timeout: float = 10) -> list[int]:
        """Subscribe at QoS 1; the granted QoS per filter (128 = refused)."""
        _rc, mid = self._client.subscribe([(f, 1) for f in topic_filters])
        if mid is None:
            raise ConnectionError("not connected")
        self._sent()
        codes = await self._await(mid, timeout)
        return [int(getattr(code, "value", code)) for code in codes]

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      timeout: float = 10) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK; ConnectionError
        at once on a closed link."""
        if self.closed.done():
            # No PUBACK can come: the caller (an ack handled after the switch
            # to a renewed identity) would wait out the whole timeout first.
            raise ConnectionError(f"the connection is closed ({self.closed.result()})")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        self._sent()
        await self._await(info.mid, timeout)

    async def _await(self, mid: int, timeout: float) -> Any:
        future = self._pending.setdefault(mid, self._loop.create_future())
        return await asyncio.wait_for(future, timeout)

    async def close(self, graceful: bool = False) -> None:
        """DISCONNECT when ``graceful`` (no will), then release the socket."""
        if graceful and not self.closed.done():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 2.0)
        if self._misc is not None:
            self._misc.cancel()
        sock = self._sock
        self._unwatch()
        if sock is not None:
            sock.close()
        if not self.closed.done():
            self.closed.set_result("closed by the agent")
