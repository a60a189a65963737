"""Broker metrics in the Prometheus text format, and a tiny HTTP endpoint.

Counters are plain integers bumped on the hot path; the text is rendered only
when scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable

from epns.prometheus import Exposition, labelled, single

_RATE_WINDOW = 10.0


class Metrics:
    """Everything the broker counts."""

    def __init__(self) -> None:
        self.connections: Counter[str] = Counter()  # by listener, a gauge
        # HTTPS connections a one-port listener relays to the server now.
        self.http_relays = 0
        self.connects = 0
        # Client connections closed, failed TLS handshakes included (broker.memory).
        self.closed = 0
        self.refusals: Counter[str] = Counter()
        self.messages_in = 0
        self.messages_out = 0
        self.drops: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self._connect_times: deque[float] = deque()
        self.sessions: Callable[[], int] = lambda: 0
        self.subscriptions: Callable[[], int] = lambda: 0

    def connected(self, now: float) -> None:
        """A client completed CONNECT and was accepted."""
        self.connects += 1
        self._connect_times.append(now)

    def connect_rate(self, now: float) -> float:
        """Accepted connects per second over the last ten seconds."""
        while self._connect_times and self._connect_times[0] < now - _RATE_WINDOW:
            self._connect_times.popleft()
        return len(self._connect_times) / _RATE_WINDOW

    def render(self, now: float) -> str:
        """The Prometheus text exposition."""
        text = Exposition()
        text.family("epns_broker_connections", "gauge", "Open client connections by listener.",
                    labelled("listener", self.connections))
        text.family("epns_broker_http_relays", "gauge",
                    "HTTPS connections one-port listeners relay to the server.",
                    single(self.http_relays))
        text.family("epns_broker_connects_total", "counter", "Accepted MQTT connects.",
                    single(self.connects))
        text.family("epns_broker_connects_per_second", "gauge",
                    "Accepted connects per second, averaged over 10 s.",
                    single(self.connect_rate(now)))
        text.family("epns_broker_refusals_total", "counter", "Refused connections by reason.",
                    labelled("reason", self.refusals))
        text.family("epns_broker_disconnects_total", "counter", "Closed connections by cause.",
                    labelled("cause", self.disconnects))
        text.family("epns_broker_messages_in_total", "counter", "PUBLISH packets received.",
                    single(self.messages_in))
        text.family("epns_broker_messages_out_total", "counter", "PUBLISH packets sent.",
                    single(self.messages_out))
        text.family("epns_broker_drops_total", "counter", "Messages dropped, by reason.",
                    labelled("reason", self.drops))
        text.family("epns_broker_sessions", "gauge", "Sessions known to the broker.",
                    single(self.sessions()))
        text.family("epns_broker_subscriptions", "gauge", "Active subscriptions.",
                    single(self.subscriptions()))
        return text.render()


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` over plain HTTP/1.0 semantics."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                                 TimeoutError):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path == b"/metrics":
                body = metrics.render(time.monotonic()).encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            else:
                body = b"not found: try /metrics\n"
                head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)
