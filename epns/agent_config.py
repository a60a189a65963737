"""The agent's settings, as loaded from ``agent.toml`` and ``EPNS_AGENT_*``.

The standard proxy variables (``HTTPS_PROXY``, ``NO_PROXY``) are read here, at
the edge, once: the rest of the agent sees only the frozen result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from epns import config, topics
from epns.errors import ConfigError
from epns.logs import LogSettings

__all__ = [
    "ENV_PREFIX",
    "AgentSettings",
    "BrokerEndpoint",
    "IdentitySettings",
    "KeepaliveSettings",
    "ProxySettings",
    "ReconnectSettings",
    "RenewalSettings",
    "SyncSettings",
    "TimeoutSettings",
    "WolSettings",
    "load_agent_settings",
]

ENV_PREFIX = "EPNS_AGENT_"


@dataclass(frozen=True)
class IdentitySettings:
    """Who the agent is: a client certificate (CN = agent id) or a token."""

    # Required: the agent's id, its MQTT client id and its certificate's CN.
    agent_id: str = ""
    # The client certificate (PEM); unset for a token identity.
    cert: Path | None = Path("certs/agent.crt")
    # Its private key (PEM).
    key: Path | None = Path("certs/agent.key")
    # A token signed by the server, for networks whose proxy breaks mTLS.
    token_file: Path | None = None
    # Groups whose fan-out commands it takes.
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.agent_id:
            raise ValueError("identity.agent_id is required")
        topics.check_name(self.agent_id)
        for group in self.groups:
            topics.check_name(group, "group")
        if self.cert is None and self.token_file is None:
            raise ValueError("identity needs a cert and key, or a token_file")
        if (self.cert is None) != (self.key is None):
            raise ValueError("identity.cert and identity.key go together")


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the broker is, and what the agent pins."""

    # The broker's name, as its certificate says it.
    host: str = "localhost"
    # Tried in this order on every route: the primary port, then the fallback.
    ports: tuple[int, ...] = (8883, 443)
    # Other brokers of the same fleet (a cluster's nodes), tried in order on
    # every route after host; each as its certificate names it.
    backup_hosts: tuple[str, ...] = ()
    # MQTT over secure WebSocket, tried last, e.g. "wss://push.example.com:8443/mqtt".
    websocket_url: str | None = None
    # The fleet CA the broker's certificate must chain to.
    ca: Path = Path("certs/ca.crt")
    # The server's Ed25519 public key: every command must carry its signature.
    server_public_key: Path = Path("certs/signing.pub")

    def __post_init__(self) -> None:
        if not self.ports:
            raise ValueError("broker.ports must name at least one port")
        for port in self.ports:
            if not 0 < port <= 65535:
                raise ValueError(f"broker port {port} is out of range")
        if self.websocket_url is not None and not self.websocket_url.startswith("wss://"):
            raise ValueError("broker.websocket_url must start with wss://")


@dataclass(frozen=True)
class ProxySettings:
    """An HTTP CONNECT proxy. ``url`` may carry the credentials
    (``http://user:secret@proxy:3128``); ``use_env`` takes ``HTTPS_PROXY`` and
    ``NO_PROXY`` when no url is set."""

    # http://[user:secret@]host:port; unset: HTTPS_PROXY (use_env).
    url: str | None = None
    # Proxy credentials, when the url does not carry them.
    username: str | None = None
    password: str | None = None
    # Take HTTPS_PROXY and NO_PROXY when url is unset.
    use_env: bool = True
    # Hosts reached without the proxy (NO_PROXY adds to them).
    no_proxy: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith("http://"):
            raise ValueError("proxy.url must be an http:// URL (an HTTP CONNECT proxy)")


@dataclass(frozen=True)
class TimeoutSettings:
    """Every step of a connection attempt is bounded, so a firewall that drops
    packets silently costs seconds, not minutes."""

    # Seconds for the TCP connection (to the broker or proxy).
    tcp_connect: float = 5.0
    # Seconds for the proxy's answer to CONNECT.
    proxy_connect: float = 8.0
    # Seconds for the TLS handshake.
    tls_handshake: float = 8.0
    # Seconds from MQTT CONNECT to CONNACK.
    connack: float = 8.0

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError(f"timeouts.{item.name} must be positive")


@dataclass(frozen=True)
class KeepaliveSettings:
    """MQTT keep-alive per kind of route (seconds). Port 443 and proxies sit
    behind middleboxes that cut idle flows, so they get shorter ones."""

    # Direct to the first of broker.ports.
    primary: int = 300
    # Direct to a later port (443).
    fallback: int = 120
    # Through the HTTP proxy.
    proxy: int = 60
    # Over broker.websocket_url.
    websocket: int = 60
    # Learn, per route and network, the longest idle interval the path
    # survives (epns.heartbeat): ping from learn_start seconds, probing
    # upward to the keep-alive above. Off: ping at the keep-alive.
    learn: bool = True
    learn_start: int = 45

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            if item.name != "learn" and not 5 <= getattr(self, item.name) <= 65535:
                raise ValueError(f"keepalive.{item.name} must be between 5 and 65535")


@dataclass(frozen=True)
class ReconnectSettings:
    """Exponential backoff with full jitter; reset once a connection has lasted."""

    # Seconds: the first delay's upper bound.
    base: float = 1.0
    # Seconds: the longest delay.
    cap: float = 120.0
    # Seconds a connection must last to reset the backoff.
    stable_after: float = 60.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("reconnect needs 0 < base <= cap")


@dataclass(frozen=True)
class SyncSettings:
    """What a sync is. ``http`` POSTs the agent's changes to the server, then
    GETs the server's (when ``fetch`` is on); ``command`` runs a program;
    ``entry_point`` calls ``module:function``."""

    # What a sync does: see the section's text.
    action: Literal["http", "command", "entry_point"] = "http"
    # The management server, https://HOST:PORT (action = http).
    url: str | None = None
    # More URLs of the same server, tried after url when the way there fails
    # (refused, dropped, a proxy that forbids the port), e.g. the broker's one
    # port https://HOST:443, which carries HTTPS too.
    backup_urls: tuple[str, ...] = ()
    # After the POST, GET the server's changes (tasks, hints).
    fetch: bool = False
    # The body of the HTTP exchange.
    format: Literal["json", "xml"] = "json"
    # Seconds between periodic syncs; a wake-up syncs at once.
    interval: float = 600.0
    # After a failed sync, retry after uniform(0, retry_base * 2**n) s (n failed
    # syncs before), at least 1 s, at most the interval; a success resets n.
    retry_base: float = 15.0
    # Seconds a whole sync may take.
    timeout: float = 30.0
    # 429/503 answers are retried after Retry-After (plus jitter), this many times.
    max_retries: int = 5
    # The longest Retry-After obeyed (seconds).
    max_retry_after: float = 300.0
    # The program and its arguments (action = command).
    command: tuple[str, ...] = ()
    # module:function (action = entry_point).
    entry_point: str | None = None
    # The server's CA; the broker's CA when unset.
    ca: Path | None = None

    @property
    def urls(self) -> list[str]:
        """Every server URL, in the order a sync tries them."""
        return ([] if self.url is None else [self.url]) + list(self.backup_urls)

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("sync.interval and sync.timeout must be positive")
        if self.retry_base < 1:
            # Below a second, a failing server would be asked again and again.
            raise ValueError("sync.retry_base must be at least 1 s")
        if self.action == "http" and not all(
                url.startswith(("https://", "http://")) for url in self.urls):
            raise ValueError("sync.url and sync.backup_urls must be http(s) URLs")
        if self.action == "command" and not self.command:
            raise ValueError("sync.action = 'command' needs sync.command")
        if self.action == "entry_point" and (not self.entry_point or ":" not in self.entry_point):
            raise ValueError(
                "sync.action = 'entry_point' needs sync.entry_point = 'module:function'")


@dataclass(frozen=True)
class RenewalSettings:
    """Renewal of the agent's certificate or token at two thirds of its
    lifetime, over the sync channel (``sync.url``; docs/identity.md). After a
    failure the agent retries after a draw in [0, retry_base * 2**n] seconds,
    at most retry_cap, and at most half the time its identity has left."""

    # Renew the identity before it expires.
    enabled: bool = True
    # Seconds: the first retry's upper bound.
    retry_base: float = 60.0
    # Seconds: the longest wait between two tries.
    retry_cap: float = 3600.0

    def __post_init__(self) -> None:
        if self.retry_base <= 0 or self.retry_cap < self.retry_base:
            raise ValueError("renewal needs 0 < retry_base <= retry_cap")


@dataclass(frozen=True)
class WolSettings:
    """How a Wake-on-LAN relay sends: to each address, on each port, repeated."""

    # UDP ports each magic packet goes to.
    ports: tuple[int, ...] = (7, 9)
    # How many times each packet is sent.
    repeat: int = 3
    # Seconds between the repeats.
    spacing: float = 0.1
    # Whether the server may elect this agent to hold off sleep, so its
    # subnet keeps a relay while the other machines sleep (the server's
    # keep_awake setting decides whether it elects anyone). On by default: the
    # admin's setting is the opt-in; a machine whose owner wants it to sleep
    # (a laptop on battery) says false.
    allow_keep_awake: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.repeat <= 10:
            raise ValueError("wol.repeat must be between 1 and 10")
        if not self.ports or not all(0 < port <= 65535 for port in self.ports):
            raise ValueError("wol.ports must name ports between 1 and 65535")


@dataclass(frozen=True)
class AgentSettings:
    """Everything ``epns-agent`` needs, frozen and passed down."""

    identity: IdentitySettings
    broker: BrokerEndpoint = field(default_factory=BrokerEndpoint)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    reconnect: ReconnectSettings = field(default_factory=ReconnectSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    wol: WolSettings = field(default_factory=WolSettings)
    renewal: RenewalSettings = field(default_factory=RenewalSettings)
    # The last working route, the server's hints, status.json (agent_push/state.py).
    state_dir: Path = Path("state")
    log: LogSettings = field(default_factory=LogSettings)


def load_agent_settings(path: Path | None, env: Mapping[str, str]) -> AgentSettings:
    """Load the agent's settings; a ConfigError says what is wrong."""
    settings = config.load(AgentSettings, path, env, ENV_PREFIX)
    settings = _proxy_from_env(settings, env)
    if path is not None:
        settings = _resolve_paths(settings, path.parent)
    return settings


def _proxy_from_env(settings: AgentSettings, env: Mapping[str, str]) -> AgentSettings:
    proxy = settings.proxy
    if not proxy.use_env or proxy.url is not None:
        return settings
    url = env.get("HTTPS_PROXY") or env.get("https_proxy")
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    extra = tuple(item.strip() for item in no_proxy.split(",") if item.strip())
    try:
        return replace(settings, proxy=replace(proxy, url=url or None,
                                               no_proxy=proxy.no_proxy + extra))
    except ValueError as exc:
        raise ConfigError(f"HTTPS_PROXY: {exc}") from exc


def _resolve_paths(settings: AgentSettings, base: Path) -> AgentSettings:
    """Relative file paths in a config file are relative to that file."""
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    def fix_optional(p: Path | None) -> Path | None:
        return None if p is None else fix(p)

    ident, broker, sync = settings.identity, settings.broker, settings.sync
    return replace(
        settings,
        identity=replace(ident, cert=fix_optional(ident.cert), key=fix_optional(ident.key),
                         token_file=fix_optional(ident.token_file)),
        broker=replace(broker, ca=fix(broker.ca),
                       server_public_key=fix(broker.server_public_key)),
        sync=replace(sync, ca=fix_optional(sync.ca)),
        state_dir=fix(settings.state_dir),
    )
