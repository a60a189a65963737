"""One port for everything: tell MQTT from HTTPS after the TLS handshake.

A network or proxy that passes only 443 must still carry the whole loop: the
push (MQTT) and the sync, API and console (HTTPS). The one-port listener
offers ALPN ``mqtt`` and ``http/1.1``; the agent offers ``mqtt``, browsers and
HTTP clients ``http/1.1``. A client that offers neither (Mosquitto's tools,
an old agent) is told apart by its first byte: an MQTT connection starts with
CONNECT (0x10), an HTTP request with a letter.

MQTT stays here, on the same connection object as on 8883, so a long-lived
agent costs the broker the same on either port. HTTP is relayed, bytes as
they come, to the server's front socket (``server_push.web.front``), after a
handover line (``epns.front``) that carries the client's address and verified
certificate. An upgrade request to the WebSocket path is relayed to this
broker's own ws-front socket (``broker.ws_front``), the same facts in the
headers nginx would set.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from epns.front import Handover
from epns.logs import Throttle, event
from epns.one_port import ALPN, Kind, classify, websocket_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnePort:
    """Where a one-port listener's non-MQTT connections go."""

    # The server's front socket, for HTTPS.
    http: Path
    # The broker's own ws-front socket, for MQTT over WebSocket, if served.
    websocket: Path | None = None
    websocket_path: str = "/mqtt"

    def upstream(self, kind: Kind) -> Path:
        """The socket a connection of ``kind`` (not MQTT) is relayed to."""
        if kind is Kind.WEBSOCKET:
            assert self.websocket is not None  # classify says WEBSOCKET only then
            return self.websocket
        return self.http

_NO_SERVER = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")
_throttle = Throttle(60.0)


def one_port_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context`` (a fresh server context) offering both protocols."""
    context.set_alpn_protocols(list(ALPN))
    return context


class FrontDoor(asyncio.Protocol):
    """The first protocol of a one-port connection: decides
    (``epns.one_port.classify``), then steps aside.

    Reading pauses once it has decided, so that every byte that came before
    the switch is in ``first`` for the protocol that takes over.
    """

    def __init__(self, websocket_path: str | None) -> None:
        self.transport: asyncio.Transport | None = None
        self.first = b""
        self.decided: asyncio.Future[Kind] = asyncio.get_running_loop().create_future()
        self._websocket_path = websocket_path
        self._alpn: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        self._alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self._classify()

    def data_received(self, data: bytes) -> None:
        self.first += data
        if not self.decided.done():
            self._classify()

    def eof_received(self) -> bool:
        self._give_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._give_up()

    def _classify(self) -> None:
        kind = classify(self._alpn, self.first, self._websocket_path)
        if kind is not None:
            assert self.transport is not None
            self.transport.pause_reading()
            self.decided.set_result(kind)

    def _give_up(self) -> None:
        if not self.decided.done():
            self.decided.set_exception(ConnectionError("closed before it said anything"))

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        """Give the connection, and what it sent so far, to ``protocol``."""
        assert self.transport is not None
        # Not kept: a chunk read from TLS holds a 4 KiB page while it lives
        # (python -m bench ssl-read-chunk), 10 % of an idle connection's cost.
        first, self.first = self.first, b""
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if first:
            protocol.data_received(first)
        self.transport.resume_reading()


class _Pipe(asyncio.Protocol):
    """One direction's reader: writes what it reads to the other side."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self._done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)

    def eof_received(self) -> bool:
        # HTTP/1.1 has no half-close worth keeping: one side is done, so is
        # the exchange (the other side's queued bytes are still flushed).
        if self.peer is not None:
            self.peer.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()
        if not self._done.done():
            self._done.set_result(None)

    # The side this one writes to is slow: stop reading until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


async def relay(door: FrontDoor, kind: Kind, upstream: Path, peer: tuple[str, int]) -> None:
    """Relay the connection behind ``door`` to ``upstream`` until either side
    closes: HTTP to the server's front socket after the handover line, MQTT
    over WebSocket to the broker's ws-front socket with the handover in its
    headers. A 502 that says why when nothing answers there."""
    client = door.transport
    assert client is not None
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    from_client, from_upstream = _Pipe(done), _Pipe(done)
    try:
        server, _ = await loop.create_unix_connection(lambda: from_upstream, str(upstream))
    except OSError as exc:
        _refuse(client, upstream, exc)
        return
    from_client.peer, from_upstream.peer = server, client
    handover = Handover(peer[0], peer[1], _client_cert(client))
    if kind is Kind.WEBSOCKET:
        head, door.first = websocket_head(door.first, handover)
        server.write(head)
    else:
        server.write(handover.encode())
    door.hand_over(from_client)
    try:
        await done
    finally:
        client.close()
        server.close()


def _client_cert(transport: asyncio.Transport) -> bytes | None:
    ssl_object = transport.get_extra_info("ssl_object")
    der: bytes | None = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    return der


def _refuse(client: asyncio.Transport, upstream: Path, exc: OSError) -> None:
    words = (f"Nothing answers on {upstream} behind this port ({exc.strerror or exc}): the "
             "epns server (its front socket) or the broker's ws-front listener is not "
             "running. MQTT on this port works without it.\n")
    due, held = _throttle.admit((str(upstream),), time.monotonic())
    if due:
        event(log, "front_upstream_unavailable", logging.ERROR, socket=str(upstream),
              error=exc.strerror or str(exc), since_last_line=held,
              hint="start epns-server on this host and enable the broker's listeners.front, "
                   "or point this listener's http_upstream/websocket_upstream at them")
    body = words.encode()
    client.write(_NO_SERVER % (len(body), body))
    client.close()
