"""The broker's settings, as loaded from ``broker.toml`` and ``EPNS_BROKER_*``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from epns import config
from epns.acl_rules import AclRule
from epns.errors import ConfigError
from epns.logs import LogSettings

__all__ = [
    "ENV_PREFIX",
    "AclSettings",
    "BrokerSettings",
    "GCSettings",
    "IdentitySettings",
    "LimitSettings",
    "ListenerSettings",
    "ListenersSettings",
    "MemorySettings",
    "MetricsSettings",
    "TLSSettings",
    "load_broker_settings",
]

ENV_PREFIX = "EPNS_BROKER_"


@dataclass(frozen=True)
class ListenerSettings:
    """One listening socket. ``mqtts`` is MQTT over TLS; ``wss`` is MQTT over
    secure WebSocket, for networks where only HTTPS passes; ``ws-front`` is
    MQTT over WebSocket from a TLS-terminating front (nginx) on a Unix socket,
    the client's certificate and address in the front's headers."""

    # TCP port; 0 takes a free one and logs it in the ready line.
    port: int
    # "0.0.0.0": every IPv4 address; "::": every IPv6 and IPv4 address.
    host: str = "0.0.0.0"  # noqa: S104 - a broker listens for the fleet
    # mqtts (MQTT over TLS), wss (MQTT over secure WebSocket) or ws-front.
    transport: Literal["mqtts", "wss", "ws-front"] = "mqtts"
    # A disabled listener is not opened.
    enabled: bool = True
    # One port for everything (mqtts only): HTTPS that arrives here (ALPN
    # http/1.1, or no ALPN and not MQTT's first byte) is relayed to the
    # server's front socket (<state_dir>/front.sock, http.front). Empty: MQTT only.
    http_upstream: Path | None = None
    # One-port listeners: MQTT over WebSocket is served at this path too
    # (an upgrade request there). Empty: not served.
    websocket_path: str = "/mqtt"
    # ws-front only: its Unix socket (mode 0660: only the front's group may
    # connect, as it is believed about the client's certificate).
    unix_socket: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if self.http_upstream is not None and self.transport != "mqtts":
            raise ValueError("http_upstream needs transport = 'mqtts'")
        if self.websocket_path and not self.websocket_path.startswith("/"):
            raise ValueError("websocket_path must start with /")
        if (self.unix_socket is not None) != (self.transport == "ws-front"):
            raise ValueError("unix_socket goes with transport = 'ws-front', and only with it")


@dataclass(frozen=True)
class ListenersSettings:
    """The three listeners an agent's route list knows: 8883 first, 443 as the
    fallback, and MQTT over secure WebSocket where only HTTPS passes."""

    primary: ListenerSettings = field(default_factory=lambda: ListenerSettings(port=8883))
    fallback: ListenerSettings = field(default_factory=lambda: ListenerSettings(
        port=443, http_upstream=Path("state/front.sock")))
    websocket: ListenerSettings = field(
        default_factory=lambda: ListenerSettings(port=8443, transport="wss", enabled=False))
    # Behind nginx (docs/deploy-nginx.md): MQTT over WebSocket it carries.
    front: ListenerSettings = field(default_factory=lambda: ListenerSettings(
        port=0, transport="ws-front", enabled=False,
        unix_socket=Path("state/broker-front.sock")))

    def enabled(self) -> dict[str, ListenerSettings]:
        """The enabled listeners by name."""
        named = {"primary": self.primary, "fallback": self.fallback, "websocket": self.websocket,
                 "front": self.front}
        return {name: listener for name, listener in named.items() if listener.enabled}


@dataclass(frozen=True)
class TLSSettings:
    """The broker's certificate and the fleet CA that client certificates chain to."""

    # The broker's certificate chain (PEM), presented to every client.
    cert: Path = Path("certs/broker.crt")
    # Its private key (PEM).
    key: Path = Path("certs/broker.key")
    # The fleet CA: client certificates must chain to it. During a CA
    # rotation the file holds several CAs (docs/rotation.md).
    ca: Path = Path("certs/ca.crt")
    # Seconds between looks at these three files: when one changes, new
    # connections get the new material, and connected clients stay.
    reload_interval: float = 2.0


@dataclass(frozen=True)
class IdentitySettings:
    """How clients prove who they are, and who is refused."""

    # The server's Ed25519 public key: verifies agent tokens. Empty disables tokens.
    server_public_key: Path | None = Path("certs/signing.pub")
    # agent:ID, serial:HEX and token:ID lines (the server appends to it); empty: none.
    revocation_file: Path | None = Path("certs/revoked.txt")
    # How often the revocation file is re-read, and revoked sessions closed.
    revocation_check_interval: float = 2.0


@dataclass(frozen=True)
class LimitSettings:
    """Protection for the fleet's one shared machine."""

    # Connections beyond this are closed at once; keep it under the open-file limit.
    max_connections: int = 19_000
    # Admission: new TCP connections per second, with a burst; excess is closed
    # before any TLS work, which is what absorbs a reconnect storm.
    connect_rate: float = 1_000.0
    connect_burst: int = 500
    # New connections per second that are one client address's share, for
    # fairness between sources (docs/architecture.md, "Admission"): while the
    # admission bucket holds more than connect_reserve of its burst anyone takes
    # from it, so a lone office behind one NAT gets the whole rate; the reserve
    # is for the sources within their share (per address and per subnet), and
    # one past its share gets only what is above the reserve.
    source_connect_rate: float = 20.0
    # The burst of one address's share.
    source_connect_burst: int = 50
    # New connections per second that are one subnet's share (/24 IPv4, /64 IPv6).
    subnet_connect_rate: float = 100.0
    # The burst of one subnet's share.
    subnet_connect_burst: int = 200
    # The fraction of connect_burst kept for sources within their share (0: none).
    connect_reserve: float = 0.5
    # TLS handshakes in progress per client address, at all times: one host
    # must not hold the broker's sockets with handshakes left hanging.
    source_handshakes: int = 500
    # Addresses (and subnets) remembered for the shares, least recently seen forgotten first.
    max_sources: int = 16_384
    # A refused or failed connection (admission, TLS handshake) is logged once
    # per cause and this many seconds, with the count of the others held back.
    refusal_log_interval: float = 10.0
    # Seconds from the TCP accept to a complete CONNECT; then the socket is closed.
    connect_timeout: float = 10.0
    # Seconds the TLS handshake may take.
    tls_handshake_timeout: float = 10.0
    # A client silent for this many times its keep-alive is dropped (MQTT says 1.5).
    keepalive_factor: float = 1.5
    # A client that asks for keep-alive 0 (none) gets this as its idle limit.
    max_idle: float = 3_600.0
    # Larger packets close the connection.
    max_packet_size: int = 65_536
    # Unacknowledged QoS 1 messages per client.
    max_inflight: int = 32
    # Messages queued per client (offline or over max_inflight); the oldest is dropped.
    max_queued: int = 1_000
    # Topic filters one client may hold; SUBACK refuses (0x80) the ones past it.
    # An agent holds three, the server a handful.
    max_subscriptions: int = 100
    # Retained topics the broker keeps (each agent's presence is one); a new
    # one past it is routed but not kept, counted and logged.
    max_retained: int = 100_000
    # A persistent session (an offline agent's queue) is kept this long.
    session_expiry: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "connect_burst", "source_connect_burst",
                     "subnet_connect_burst", "source_handshakes", "max_sources",
                     "max_packet_size", "max_inflight", "max_queued", "max_subscriptions",
                     "max_retained"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("connect_rate", "source_connect_rate", "subnet_connect_rate",
                     "refusal_log_interval", "connect_timeout", "tls_handshake_timeout",
                     "max_idle",
                     "session_expiry"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.keepalive_factor < 1:
            raise ValueError("keepalive_factor must be at least 1")
        if not 0 <= self.connect_reserve < 1:
            raise ValueError("connect_reserve must be at least 0 and below 1")


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus text metrics over plain HTTP; keep it on a private address."""

    # Serve /metrics at all.
    enabled: bool = True
    # Plain HTTP: a loopback or private address.
    host: str = "127.0.0.1"
    # 0 takes a free one and logs it.
    port: int = 9883


@dataclass(frozen=True)
class GCSettings:
    """CPython's cyclic garbage collector in the broker process
    (``broker/gc_policy.py``; the measurements are in docs/benchmark-history.md, "GC tuning")."""

    # Objects that survived this long are frozen (``gc.freeze()``): the automatic
    # collections no longer traverse the connected fleet. 0 = stock CPython GC.
    freeze_interval: float = 1.0
    # A full collection, frozen objects included (frees the cycles that died
    # after being frozen; stops the broker for about 0.2 s per 1,000 sessions),
    # runs at most this often, and only once the process's peak memory has
    # grown by a quarter since the last one.
    full_collection_interval: float = 600.0

    def __post_init__(self) -> None:
        if self.freeze_interval < 0:
            raise ValueError("freeze_interval must not be negative")
        if self.full_collection_interval <= 0:
            raise ValueError("full_collection_interval must be positive")


@dataclass(frozen=True)
class AclSettings:
    """Integrator topics: rules that widen the wire contract's ACL outside its
    ``epns/`` namespace, Mosquitto-style (``epns/acl_rules.py``; docs/external-brokers.md,
    "Integrator topics"). No rules: the contract alone."""

    # [[acl.rules]] tables, each with identities, access and topics (below). In
    # the environment: a JSON list of such objects.
    rules: tuple[AclRule, ...] = ()


@dataclass(frozen=True)
class MemorySettings:
    """Memory the C heap keeps after connections close, handed back to the
    system after a burst (``broker/memory.py``; docs/memory.md)."""

    # Hand the heap's free memory back (malloc_trim) once this many connections
    # have closed since the last time. 0 = never: glibc's own policy, under
    # which the RSS stays at the peak of a burst of TLS handshakes.
    release_after_closes: int = 64
    # At least this many seconds between two releases (each walks the whole
    # heap: about 15 ms per GiB, plus some 15 ms per 100 MiB it gives back).
    release_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.release_after_closes < 0:
            raise ValueError("release_after_closes must not be negative")
        if self.release_interval < 0:
            raise ValueError("release_interval must not be negative")


@dataclass(frozen=True)
class BrokerSettings:
    """Everything ``epns-broker`` needs, frozen and passed down."""

    listeners: ListenersSettings = field(default_factory=ListenersSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    gc: GCSettings = field(default_factory=GCSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    acl: AclSettings = field(default_factory=AclSettings)

    def __post_init__(self) -> None:
        if not self.listeners.enabled():
            raise ValueError("at least one listener must be enabled")


def load_broker_settings(path: Path | None, env: Mapping[str, str]) -> BrokerSettings:
    """Load the broker's settings; a ConfigError says what is wrong."""
    settings = config.load(BrokerSettings, path, env, ENV_PREFIX)
    if path is not None:
        settings = _resolve_paths(settings, path.parent)
    return settings


def _resolve_paths(settings: BrokerSettings, base: Path) -> BrokerSettings:
    """Relative file paths in a config file are relative to that file."""
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    def fix_optional(p: Path | None) -> Path | None:
        return None if p is None else fix(p)

    tls = settings.tls
    ident = settings.identity
    try:
        return replace(
            settings,
            tls=replace(tls, cert=fix(tls.cert), key=fix(tls.key), ca=fix(tls.ca)),
            listeners=replace(settings.listeners, **{
                name: replace(listener, http_upstream=fix_optional(listener.http_upstream),
                              unix_socket=fix_optional(listener.unix_socket))
                for name, listener in settings.listeners.enabled().items()}),
            identity=replace(
                ident,
                server_public_key=fix_optional(ident.server_public_key),
                revocation_file=fix_optional(ident.revocation_file),
            ),
        )
    except ValueError as exc:  # pragma: no cover - replace re-runs validation
        raise ConfigError(str(exc)) from exc
