"""An agent's ordered list of routes to the broker, sans-IO.

The order is the contract: through the proxy (when one is configured and the
broker is not excluded by ``no_proxy``), then direct; on each, the primary
port, then the fallback port; then MQTT over secure WebSocket. The route that
worked last time goes first, so an agent behind a strict firewall does not
pay for the same timeouts at every reconnect.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from epns.errors import ConfigError


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

    @property
    def name(self) -> str:
        """Stable name for logs, the state file and the birth message,
        e.g. ``direct:8883``, ``proxy:443``, ``direct:wss``."""
        via = "proxy" if self.proxy is not None else "direct"
        return f"{via}:{'wss' if self.transport == 'wss' else self.port}"

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
) -> list[Route]:
    """The routes to try, in order; ``last_good`` (a route name) goes first."""
    via: list[ProxyEndpoint | None] = [None]
    if proxy is not None and not bypasses_proxy(host, no_proxy):
        via = [proxy, None]
    routes = [
        Route("mqtts", host, port, through, primary=index == 0)
        for through in via
        for index, port in enumerate(ports)
    ]
    if websocket_url is not None:
        parts = urlsplit(websocket_url)
        ws_host = parts.hostname or host
        routes += [
            Route("wss", ws_host, parts.port or 443, through, path=parts.path or "/mqtt")
            for through in via
        ]
    first = [route for route in routes if route.name == last_good]
    return first + [route for route in routes if route.name != last_good]
