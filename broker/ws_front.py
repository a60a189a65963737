"""MQTT over WebSocket from a TLS-terminating front (nginx), on a Unix socket.

nginx ends the agent's TLS and verifies its certificate; the broker never
sees that TLS, so nginx passes what it learnt in headers it sets itself
(``epns.front.from_headers``). The socket's file mode decides who may
connect (``epns.unix_socket``): only a front the operator let in is believed.
The identity then reaches the auth plugin exactly as a certificate from the
broker's own TLS does, through the writer's ``get_ssl_info``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import websockets.asyncio.server as ws_server
from amqtt.adapters import WebSocketsReader, WebSocketsWriter
from websockets.typing import Subprotocol

from broker.fleet_broker import FleetBroker
from broker.hub import ConnectionHub
from epns.errors import MalformedMessage
from epns.front import ADDRESS_HEADER, CERT_HEADER, Handover, from_headers
from epns.logs import event
from epns.unix_socket import bind_trusted_socket

log = logging.getLogger(__name__)


class _ForwardedTLS:
    """What the auth plugin asks of a TLS object: the peer's certificate."""

    def __init__(self, der: bytes | None) -> None:
        self._der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        """The certificate nginx verified (DER); only the binary form is asked."""
        assert binary_form, "the auth plugin reads the DER form"
        return self._der


class _FrontedWriter(WebSocketsWriter):
    """amqtt's WebSocket writer, with the peer and certificate the front saw."""

    def __init__(self, connection: ws_server.ServerConnection, handover: Handover) -> None:
        super().__init__(connection)
        self._handover = handover

    def get_peer_info(self) -> tuple[str, int]:
        return (self._handover.peer_host, self._handover.peer_port)

    def get_ssl_info(self) -> _ForwardedTLS:
        return _ForwardedTLS(self._handover.cert_der)


async def serve_ws_front(broker: FleetBroker, hub: ConnectionHub, name: str,
                         path: Path) -> ws_server.Server:
    """Serve MQTT over WebSocket (subprotocol 'mqtt') on the Unix socket ``path``."""
    sock = bind_trusted_socket(path, "the broker's front socket")

    async def handle(connection: ws_server.ServerConnection) -> None:
        refusal = hub.gate.admit(time.monotonic())
        if refusal is not None:
            hub.metrics.refusals[refusal.value] += 1
            await connection.close(1013, "try again later")
            return
        hub.metrics.connections[name] += 1
        try:
            headers = connection.request.headers if connection.request else {}
            handover = from_headers(headers.get(ADDRESS_HEADER), headers.get(CERT_HEADER))
        except MalformedMessage as exc:
            event(log, "front_refused", logging.WARNING, listener=name, reason=str(exc))
            await connection.close(1008, "bad front headers")
        else:
            await broker.external_connected(
                WebSocketsReader(connection), _FrontedWriter(connection, handover), name)
        finally:
            hub.metrics.connections[name] -= 1
            hub.gate.release()

    return await ws_server.unix_serve(
        handle, sock=sock, subprotocols=[Subprotocol("mqtt")],
        max_size=hub.max_packet_size, ping_interval=30, ping_timeout=30)
