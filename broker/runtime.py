"""Start and stop the whole broker: the core, its listeners, metrics."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import shutil
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets.asyncio.server as ws_server
from websockets.typing import Subprotocol

from broker.access import Access
from broker.fleet_broker import FleetBroker
from broker.front_door import OnePort, one_port_context
from broker.hub import ConnectionHub
from broker.metrics import Metrics, serve_metrics
from broker.revocation import RevocationFile
from broker.ws_front import serve_ws_front
from epns import pki, tls
from epns.acl_rules import AccessPolicy
from epns.broker_config import BrokerSettings, ListenerSettings
from epns.errors import ConfigError, PKIError
from epns.logs import event
from epns.tls_reload import TlsReload

log = logging.getLogger(__name__)


@dataclass
class RunningBroker:
    """A started broker; ``ports`` maps listener names to bound ports."""

    broker: FleetBroker
    hub: ConnectionHub
    metrics: Metrics
    ports: dict[str, int] = field(default_factory=dict)
    metrics_port: int | None = None
    _closers: list[Any] = field(default_factory=list)
    _cleanups: list[Callable[[], object]] = field(default_factory=list)

    async def stop(self) -> None:
        """Close listeners and clients, then the core."""
        for closer in self._closers:
            closer.close()
        await self.hub.close()
        await self.broker.shutdown()
        for cleanup in self._cleanups:
            cleanup()


def _context(settings: BrokerSettings) -> ssl.SSLContext:
    """A listener's TLS context (each its own: a one-port listener adds ALPN)."""
    context = tls.server_context(settings.tls.cert, settings.tls.key, settings.tls.ca)
    # No TLS 1.3 session tickets. OpenSSL sends two after every handshake
    # (Python's default), about a fifth of the broker's CPU per connect
    # (docs/benchmark-history.md, "Broker tuning for issue 6"), for nothing: agents (paho
    # on Python's ssl) never resume a session, and a restarted broker could not
    # read its predecessor's tickets anyway.
    context.num_tickets = 0
    return context


def _fresh_context(settings: BrokerSettings, *, one_port: bool) -> ssl.SSLContext:
    """A listener's context built again from the files (``TlsReload``)."""
    context = _context(settings)
    return one_port_context(context) if one_port else context


async def _watch_tls(reload: TlsReload, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        reload.refresh()


async def start(settings: BrokerSettings) -> RunningBroker:
    """Start everything; raises ConfigError for unusable settings or files."""
    contexts = {name: _context(settings) for name in settings.listeners.enabled()}
    # A CA rotation rewrites these files: new handshakes follow them.
    reload = TlsReload((settings.tls.cert, settings.tls.key, settings.tls.ca))
    token_keys = None
    if settings.identity.server_public_key is not None:
        try:
            # Re-read when a key rotation rewrites it (epns.trust).
            token_keys = pki.PublicKeyFile(settings.identity.server_public_key)
        except PKIError as exc:
            raise ConfigError(str(exc)) from exc
    access = Access(RevocationFile(settings.identity.revocation_file), token_keys,
                    AccessPolicy(settings.acl.rules))
    revocations = access.revocations
    metrics = Metrics()
    broker = FleetBroker(settings.limits, metrics, access)
    await broker.start()
    hub = ConnectionHub(broker, settings.limits, metrics, revocations,
                        settings.identity.revocation_check_interval)
    hub.start()
    running = RunningBroker(broker, hub, metrics)
    for name, listener in settings.listeners.enabled().items():
        try:
            if listener.transport == "mqtts":
                one_port = await _one_port(running, name, listener)
                reload.attach(contexts[name], functools.partial(
                    _fresh_context, settings, one_port=one_port is not None))
                port = await hub.listen(name, listener.host, listener.port, contexts[name],
                                        one_port)
            elif listener.unix_socket is not None:  # ws-front
                server = await serve_ws_front(hub, name, listener.unix_socket)
                running._closers.append(server)
                event(log, "listening", listener=name, transport=listener.transport,
                      socket=str(listener.unix_socket))
                continue
            else:
                reload.attach(contexts[name], functools.partial(_fresh_context, settings,
                                                                one_port=False))
                server = await _serve_websocket(hub, name, listener, contexts[name])
                running._closers.append(server)
                port = server.sockets[0].getsockname()[1]
        except OSError as exc:
            # One taken port (a web server on 443) must not cost the others:
            # serve what could be bound, and say what to move.
            event(log, "listener_unavailable", logging.ERROR, listener=name,
                  address=f"{listener.host}:{listener.port}", error=exc.strerror or str(exc),
                  hint=_port_hint(f"listeners.{name}.port", exc))
            continue
        except ConfigError as exc:  # the front's Unix socket
            event(log, "listener_unavailable", logging.ERROR, listener=name, error=str(exc))
            continue
        running.ports[name] = port
        event(log, "listening", listener=name, transport=listener.transport,
              host=listener.host, port=port)
    if not running.ports:
        await running.stop()
        raise ConfigError("no listener could be opened; see the listener_unavailable lines")
    watch = asyncio.create_task(_watch_tls(reload, settings.tls.reload_interval))
    running._cleanups.append(watch.cancel)
    if settings.metrics.enabled:
        try:
            metrics_server = await serve_metrics(metrics, settings.metrics.host,
                                                 settings.metrics.port)
        except OSError as exc:
            event(log, "metrics_unavailable", logging.ERROR,
                  address=f"{settings.metrics.host}:{settings.metrics.port}",
                  error=exc.strerror or str(exc), hint=_port_hint("metrics.port", exc))
        else:
            running._closers.append(metrics_server)
            running.metrics_port = metrics_server.sockets[0].getsockname()[1]
            event(log, "metrics",
                  url=f"http://{settings.metrics.host}:{running.metrics_port}/metrics")
    return running


async def _one_port(running: RunningBroker, name: str,
                    listener: ListenerSettings) -> OnePort | None:
    """A one-port listener's upstreams. Its MQTT over WebSocket goes to a
    ws-front listener of this broker's own, on a socket in a private
    directory (0700): nothing else can reach it, and two brokers on one
    host cannot mix them up."""
    if listener.http_upstream is None:
        return None
    if not listener.websocket_path:
        return OnePort(listener.http_upstream)
    private = Path(tempfile.mkdtemp(prefix="epns-broker-"))
    running._cleanups.append(functools.partial(shutil.rmtree, private, ignore_errors=True))
    socket_path = private / "ws.sock"
    server = await serve_ws_front(running.hub, name, socket_path)
    running._closers.append(server)
    return OnePort(listener.http_upstream, socket_path, listener.websocket_path)


def _port_hint(key: str, exc: OSError) -> str:
    """What to change when a port cannot be bound: the setting and its variable."""
    variable = "EPNS_BROKER_" + key.upper().replace(".", "__")
    if exc.errno == errno.EACCES:
        return (f"ports below 1024 need root or CAP_NET_BIND_SERVICE (README, 'Port 443 "
                f"without root'), or move it: {key} in broker.toml or {variable}")
    return (f"another program holds it: stop that, or move this one: {key} in broker.toml "
            f"or {variable}")


async def _serve_websocket(hub: ConnectionHub, name: str, listener: ListenerSettings,
                           context: Any) -> Any:
    """MQTT over secure WebSocket (subprotocol 'mqtt'), for networks where only
    HTTPS passes. The admission gate applies; dead peers are found by
    WebSocket pings, and the packet size by the WebSocket frame limit."""

    async def handle(connection: ws_server.ServerConnection) -> None:
        await hub.serve_websocket(name, connection)

    return await ws_server.serve(
        handle, listener.host, listener.port, ssl=context,
        subprotocols=[Subprotocol("mqtt")],
        max_size=hub.max_packet_size, ping_interval=30, ping_timeout=30,
    )
