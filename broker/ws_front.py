"""MQTT over WebSocket from a TLS-terminating front (nginx), on a Unix socket.

nginx ends the agent's TLS and verifies its certificate; the broker never
sees that TLS, so nginx passes what it learnt in headers it sets itself
(``epns.front.from_headers``). The socket's file mode decides who may
connect (``epns.unix_socket``): only a front the operator let in is believed.
The identity then reaches authentication exactly as a certificate from the
broker's own TLS does (``MQTTConnection.certificate``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import websockets.asyncio.server as ws_server
from websockets.typing import Subprotocol

from broker.hub import ConnectionHub
from epns.errors import MalformedMessage
from epns.front import ADDRESS_HEADER, CERT_HEADER, from_headers
from epns.logs import event
from epns.unix_socket import bind_trusted_socket

log = logging.getLogger(__name__)


async def serve_ws_front(hub: ConnectionHub, name: str, path: Path) -> ws_server.Server:
    """Serve MQTT over WebSocket (subprotocol 'mqtt') on the Unix socket ``path``."""
    sock = bind_trusted_socket(path, "the broker's front socket")

    async def handle(connection: ws_server.ServerConnection) -> None:
        try:
            headers = connection.request.headers if connection.request else {}
            handover = from_headers(headers.get(ADDRESS_HEADER), headers.get(CERT_HEADER))
        except MalformedMessage as exc:
            event(log, "front_refused", logging.WARNING, listener=name, reason=str(exc))
            await connection.close(1008, "bad front headers")
            return
        await hub.serve_websocket(name, connection, peer=(handover.peer_host, handover.peer_port),
                                  certificate=handover.cert_der)

    return await ws_server.unix_serve(
        handle, sock=sock, subprotocols=[Subprotocol("mqtt")],
        max_size=hub.max_packet_size, ping_interval=30, ping_timeout=30)
