"""An agent's ordered list of routes to the broker, sans-IO.

The order is the contract: through the proxy (when one is configured and the
broker is not excluded by ``no_proxy``), then direct; on each, the primary
port, then the fallback port; then MQTT over secure WebSocket. The route that
worked last time goes first, so an agent behind a strict firewall does not
pay for the same timeouts at every reconnect.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from epns.errors import (
    ConfigError,
    ProxyAuthFailed,
    ProxyFailed,
    ProxyPortRefused,
    RouteError,
    TcpRefused,
    TcpTimeout,
    TcpUnreachable,
)

__all__ = [
    "PORT_RETRY",
    "PROXY_RETRY",
    "PathFault",
    "ProxyEndpoint",
    "Route",
    "RouteBook",
    "SyncWay",
    "bypasses_proxy",
    "fault_of",
    "parse_proxy",
    "plan_routes",
    "sync_candidates",
]


@dataclass(frozen=True)
class ProxyEndpoint:
    """An HTTP CONNECT proxy; the password is never part of a route's name."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def url(self) -> str:
        """The proxy URL for python-socks and httpx, credentials included."""
        auth = ""
        if self.username is not None:
            auth = f"{_quote(self.username)}:{_quote(self.password or '')}@"
        return f"http://{auth}{self.host}:{self.port}"


def _quote(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True)
class Route:
    """One way to reach the broker."""

    transport: Literal["mqtts", "wss"]
    host: str
    port: int
    proxy: ProxyEndpoint | None = None
    path: str = "/mqtt"
    primary: bool = True
    # To one of broker.backup_hosts, not broker.host.
    backup: bool = False

    @property
    def name(self) -> str:
        """Stable name for logs, the state file and the birth message,
        e.g. ``direct:8883``, ``proxy:443``, ``direct:wss``; a backup host's
        routes name it: ``direct:8883@b2.example``."""
        via = "proxy" if self.proxy is not None else "direct"
        name = f"{via}:{'wss' if self.transport == 'wss' else self.port}"
        return f"{name}@{self.host}" if self.backup else name

    @property
    def kind(self) -> Literal["primary", "fallback", "proxy", "websocket"]:
        """Which keep-alive setting applies."""
        if self.transport == "wss":
            return "websocket"
        if self.proxy is not None:
            return "proxy"
        return "primary" if self.primary else "fallback"


def parse_proxy(url: str, username: str | None = None,
                password: str | None = None) -> ProxyEndpoint:
    """``http://[user:pass@]host:port``; explicit credentials win over the URL's."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"proxy URL {url!r} is not http://host:port")
    try:
        port = parts.port or 3128
    except ValueError as exc:
        raise ConfigError(f"proxy URL {url!r}: {exc}") from exc
    return ProxyEndpoint(
        host=parts.hostname,
        port=port,
        username=username if username is not None else (
            unquote(parts.username) if parts.username else None),
        password=password if password is not None else (
            unquote(parts.password) if parts.password else None),
    )


def bypasses_proxy(host: str, no_proxy: tuple[str, ...]) -> bool:
    """``NO_PROXY`` semantics: ``*``, exact names, domain suffixes
    (``example.com`` and ``.example.com``), IP addresses and CIDR blocks."""
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy):
        if not entry:
            continue
        if entry == "*":
            return True
        if _in_network(host, entry):
            return True
        suffix = entry.lstrip(".").split(":")[0]
        if host == suffix or host.endswith("." + suffix):
            return True
    return False


def _in_network(host: str, entry: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return address in network


def plan_routes(
    host: str,
    ports: tuple[int, ...],
    *,
    proxy: ProxyEndpoint | None,
    no_proxy: tuple[str, ...] = (),
    websocket_url: str | None = None,
    last_good: str | None = None,
    backup_hosts: tuple[str, ...] = (),
) -> list[Route]:
    """The routes to try, in order: every route to ``host``, then to each of
    ``backup_hosts``; ``last_good`` (a route name) goes first."""
    routes = _mqtts_routes(host, ports, proxy, no_proxy, backup=False)
    if websocket_url is not None:
        parts = urlsplit(websocket_url)
        ws_host = parts.hostname or host
        routes += [
            Route("wss", ws_host, parts.port or 443, through, path=parts.path or "/mqtt")
            for through in _vias(host, proxy, no_proxy)
        ]
    for backup in backup_hosts:
        routes += _mqtts_routes(backup, ports, proxy, no_proxy, backup=True)
    first = [route for route in routes if route.name == last_good]
    return first + [route for route in routes if route.name != last_good]


def _mqtts_routes(host: str, ports: tuple[int, ...], proxy: ProxyEndpoint | None,
                  no_proxy: tuple[str, ...], *, backup: bool) -> list[Route]:
    """Through the proxy (unless ``no_proxy`` exempts ``host``), then direct;
    on each, the ports in order."""
    return [Route("mqtts", host, port, through, primary=index == 0, backup=backup)
            for through in _vias(host, proxy, no_proxy) for index, port in enumerate(ports)]


def _vias(host: str, proxy: ProxyEndpoint | None,
          no_proxy: tuple[str, ...]) -> list[ProxyEndpoint | None]:
    if proxy is not None and not bypasses_proxy(host, no_proxy):
        return [proxy, None]
    return [None]


@dataclass(frozen=True)
class SyncWay:
    """One way for the sync's HTTPS: a server URL, through a proxy or direct."""

    url: str
    proxy: ProxyEndpoint | None = None

    @property
    def port(self) -> int:
        """The server's port, which a proxy may refuse."""
        return urlsplit(self.url).port or 443

    @property
    def name(self) -> str:
        """For logs, e.g. ``proxy:https://server:443``; no credentials."""
        return f"{'proxy' if self.proxy is not None else 'direct'}:{self.url}"


def sync_candidates(urls: list[str], proxy: ProxyEndpoint | None,
                    no_proxy: tuple[str, ...]) -> list[SyncWay]:
    """Every URL through the proxy (unless ``no_proxy`` exempts its host)
    and direct, in the configured order."""
    ways: list[SyncWay] = []
    for url in urls:
        host = urlsplit(url).hostname or ""
        if proxy is not None and not bypasses_proxy(host, no_proxy):
            ways.append(SyncWay(url, proxy))
        ways.append(SyncWay(url))
    return ways


class PathFault(StrEnum):
    """Why one way to the server failed, as push and sync both judge it."""

    # The proxy cannot be reached, refuses the connection or stays silent.
    PROXY_DEAD = "proxy_dead"
    # The proxy wants other credentials (407, or 401 from tinyproxy).
    PROXY_CREDENTIALS = "proxy_credentials"
    # The proxy forbids CONNECT to this port (403): its other ports may pass
    # (Debian's stock Squid allows CONNECT to 443 only).
    PROXY_PORT = "proxy_port"
    # Direct: nothing answered at the server's address (refused, dropped).
    UNREACHABLE = "unreachable"


def fault_of(error: RouteError) -> PathFault | None:
    """The ``PathFault`` a failed connection attempt shows, if any: a TLS or
    MQTT failure says nothing about the way there."""
    if isinstance(error, ProxyPortRefused):
        return PathFault.PROXY_PORT
    if isinstance(error, ProxyAuthFailed):
        return PathFault.PROXY_CREDENTIALS
    if isinstance(error, ProxyFailed):
        return PathFault.PROXY_DEAD
    if isinstance(error, TcpRefused | TcpTimeout | TcpUnreachable):
        return PathFault.UNREACHABLE
    return None


# A proxy that failed is tried again after this long; a refused port after
# PORT_RETRY (a proxy's ACL changes seldom, but it does change).
PROXY_RETRY = 60.0
PORT_RETRY = 3600.0


@dataclass
class RouteBook:
    """What this agent has learnt about its ways out, shared by push and sync
    so that the two cannot disagree: a proxy that fails the sync is a failed
    proxy for MQTT too, and a port the proxy refuses is refused for both.

    Pure state; the caller passes the clock.
    """

    proxy_failed_at: float | None = None
    proxy_fault: PathFault | None = None
    # Ports the proxy refused CONNECT to, and when.
    refused_ports: dict[int, float] = field(default_factory=dict)
    # The route MQTT is connected on now, if any.
    connected: Route | None = None
    # The way the last successful sync went.
    sync_good: SyncWay | None = None

    def failed(self, fault: PathFault, *, port: int, now: float) -> None:
        """Record a failure of a proxied way to ``port``."""
        if fault is PathFault.PROXY_PORT:
            self.refused_ports[port] = now
        elif fault in (PathFault.PROXY_DEAD, PathFault.PROXY_CREDENTIALS):
            self.proxy_failed_at, self.proxy_fault = now, fault

    def proxy_worked(self) -> None:
        """A way through the proxy worked: it is up, and its credentials pass."""
        self.proxy_failed_at = self.proxy_fault = None

    def proxy_usable(self, now: float) -> bool:
        """False while a recent proxy failure stands."""
        return self.proxy_failed_at is None or now - self.proxy_failed_at >= PROXY_RETRY

    def port_refused(self, port: int, now: float) -> bool:
        """Whether the proxy recently refused CONNECT to ``port``."""
        at = self.refused_ports.get(port)
        return at is not None and now - at < PORT_RETRY

    def order(self, routes: list[Route], now: float) -> list[Route]:
        """``routes`` as a connection pass should try them: a port the proxy
        refuses is not asked again, and routes through a proxy that just
        failed go after the others (tried last, not never: it may be the only
        way out)."""
        kept = [r for r in routes if r.proxy is None or not self.port_refused(r.port, now)]
        if self.proxy_usable(now):
            return kept
        return ([r for r in kept if r.proxy is None] + [r for r in kept if r.proxy is not None])

    def sync_ways(self, candidates: list[SyncWay], *, last_good: str | None,
                  now: float) -> list[SyncWay]:
        """The order the sync tries ``candidates`` in (each URL through its
        proxy and direct): the way MQTT goes now (or went last) first, across
        every URL, so that a proxy-only network reaches the one port 443
        through the proxy before any direct attempt times out; the proxy last
        while a failure of it stands, and never to a port it refuses. Before
        those, the way the last sync went, then a URL on the very host, port
        and way MQTT is connected on now (the one port 443: proven to pass)."""
        current = self.connected.name if self.connected is not None else last_good
        proxied_first = (current is None or current.startswith("proxy:")) and (
            self.proxy_usable(now))
        kept = [way for way in candidates
                if way.proxy is None or not self.port_refused(way.port, now)]
        kept.sort(key=lambda way: (way.proxy is None) == proxied_first)
        kept.sort(key=lambda way: not self._beside_push(way))
        good = self.sync_good
        # Not through a proxy that failed since (push found it dead or silent).
        if good in kept and (good.proxy is None or self.proxy_usable(now)):
            kept.remove(good)
            kept.insert(0, good)
        return kept

    def _beside_push(self, way: SyncWay) -> bool:
        route = self.connected
        return (route is not None and route.transport == "mqtts"
                and urlsplit(way.url).hostname == route.host and way.port == route.port
                and way.proxy == route.proxy)

    def sync_failed(self, way: SyncWay) -> None:
        """``way`` failed: the next sync does not start with it."""
        if self.sync_good == way:
            self.sync_good = None
