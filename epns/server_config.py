"""The management server's settings, as loaded from ``server.toml`` and ``EPNS_SERVER_*``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

from epns import config
from epns.errors import ConfigError
from epns.logs import LogSettings

__all__ = [
    "ENV_PREFIX",
    "AgentIdentitySettings",
    "BrokerAuthSettings",
    "BudgetSettings",
    "CampaignSettings",
    "ClusterSettings",
    "ConsoleSettings",
    "DatabaseSettings",
    "EmbeddedBrokerSettings",
    "EnrolSettings",
    "HttpSettings",
    "MqttSettings",
    "NotificationSettings",
    "PkiSettings",
    "PresenceSettings",
    "ServerSettings",
    "SyncSettings",
    "WakeupSettings",
    "WolSendSettings",
    "load_server_settings",
]

ENV_PREFIX = "EPNS_SERVER_"
FRONT_SOCKET = "front.sock"


@dataclass(frozen=True)
class HttpSettings:
    """The HTTPS listener of the API, the console and the agents' sync endpoints.

    Client certificates are asked for but optional: agents prove themselves with
    one or with a bearer token, admins log in with a password."""

    # "0.0.0.0": every IPv4 address; "::": every IPv6 and IPv4 address.
    host: str = "0.0.0.0"  # noqa: S104 - agents sync from the whole fleet
    # 0 takes a free one.
    port: int = 9443
    # The HTTPS certificate chain (PEM).
    cert: Path = Path("certs/broker.crt")
    # Its private key (PEM).
    key: Path = Path("certs/broker.key")
    # Agents' client certificates must chain to it (the fleet CA).
    client_ca: Path = Path("certs/ca.crt")
    # What agents and admins type: goes into agent config bundles and links.
    public_url: str = ""
    # Largest API or console request body; the sync endpoints have sync.max_body.
    max_body: int = 256 * 1024
    # The broker port that carries HTTPS too (its one-port listener; 443 in
    # the all-in-one): agent bundles list https://<agent host>:<it> as their
    # backup sync URL, for networks that pass only 443. 0: none.
    one_port: int = 443
    # Serve <state_dir>/front.sock (mode 0660), where a trusted TLS front
    # hands over the HTTPS it ended: the broker's one-port listener (443 for
    # MQTT and HTTPS alike) or nginx (docs/deploy-nginx.md).
    front: bool = True
    # Strict-Transport-Security max-age on every HTTPS answer, seconds: a
    # browser that saw it never speaks plain HTTP to this host again. 0: none.
    hsts_max_age: int = 365 * 86400

    def __post_init__(self) -> None:
        if not (0 <= self.port <= 65535 and 0 <= self.one_port <= 65535):
            raise ValueError("http.port and http.one_port must be 0..65535")
        if self.hsts_max_age < 0:
            raise ValueError("http.hsts_max_age must be 0 (off) or more seconds")


@dataclass(frozen=True)
class MqttSettings:
    """How the server reaches the broker, as the server role."""

    # The broker, as its certificate names it.
    host: str = "127.0.0.1"
    port: int = 8883
    # The CA the broker's certificate must chain to.
    ca: Path = Path("certs/ca.crt")
    # The server's client certificate (CN and OU epns-server).
    cert: Path = Path("certs/server.crt")
    # Its private key (PEM).
    key: Path = Path("certs/server.key")
    # The server's MQTT client id (see [cluster] for replicas).
    client_id: str = "epns-server"
    # Seconds.
    keepalive: int = 30
    # Other nodes of a clustered broker, "host:port" each: after a failed or
    # lost session the server tries the next address, host:port first.
    fallbacks: tuple[str, ...] = ()
    # Addresses agents use to reach the broker, for their config bundle; empty
    # means the host of ``http.public_url``.
    agent_host: str = ""
    agent_ports: tuple[int, ...] = (8883, 443)

    def __post_init__(self) -> None:
        for address in self.fallbacks:
            _split_address(address)

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Where the broker is, in the order the server tries it."""
        return ((self.host, self.port), *(_split_address(a) for a in self.fallbacks))


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"mqtt.fallbacks: {address!r} is not host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class EmbeddedBrokerSettings:
    """The all-in-one default: the server starts ``epns-broker`` as a child process."""

    # Run epns-broker as a child process; false with an external broker.
    enabled: bool = True
    # Its broker.toml; unset: its defaults and EPNS_BROKER_*.
    config: Path | None = None


@dataclass(frozen=True)
class PkiSettings:
    """The fleet CA (to issue agent certificates), the command signing key and
    the revocation list the broker watches."""

    # ca.crt/key, signing.key/pub, revoked.txt; a dev PKI is made here on first run.
    dir: Path = Path("certs")
    # Seconds ``rotate signing-key begin`` announces as the overlap, when not
    # told: at least the longest an agent may stay offline and still follow
    # the rotation, plus its sync interval (docs/rotation.md).
    rotation_overlap: float = 30 * 86400.0
    # How often the running server looks for a rotation step (rotation.json).
    rotation_check_interval: float = 5.0


@dataclass(frozen=True)
class AgentIdentitySettings:
    """The lifetimes of the identities the server issues to agents, and their
    renewal (docs/identity.md). Agents renew at two thirds of the lifetime
    over their sync channel; ``renewals_per_hour`` and ``renewal_burst``
    bound how often one agent may, so a broken one cannot mint certificates
    in a loop, yet a retry after an answer lost in transit passes."""

    # Seconds an agent certificate is valid (825 days).
    certificate_lifetime: float = 825 * 86400.0
    # Seconds an agent token is valid (365 days).
    token_lifetime: float = 365 * 86400.0
    # Renewals one agent may make per hour.
    renewals_per_hour: float = 6.0
    # Renewals one agent may make at once (a retry after a lost answer).
    renewal_burst: int = 3
    # Seconds: the console marks identities that expire within this.
    expiring_soon: float = 30 * 86400.0

    def __post_init__(self) -> None:
        if min(self.certificate_lifetime, self.token_lifetime) < 3:
            raise ValueError("identity: certificate_lifetime and token_lifetime must be at "
                             "least 3 seconds")
        if self.renewals_per_hour <= 0 or self.renewal_burst < 1 or self.expiring_soon <= 0:
            raise ValueError("identity: renewals_per_hour, renewal_burst and expiring_soon "
                             "must be positive")


@dataclass(frozen=True)
class EnrolSettings:
    """Enrolment by token, and the one-line installer (docs/install-agent.md)."""

    # Where the agent packages the installer offers are (epns-agent_*.deb, a
    # single-file epns-agent*.pyz): served at /install/packages/. Unset: no
    # installer is offered (404 that says so).
    packages_dir: Path | None = None
    # Seconds an enrolment that needs approval waits for an admin's decision.
    pending_ttl: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.pending_ttl <= 0:
            raise ValueError("enrol.pending_ttl must be positive")


@dataclass(frozen=True)
class DatabaseSettings:
    """SQLite by default; PostgreSQL with ``postgresql+asyncpg://…``."""

    # A SQLAlchemy URL; a relative SQLite path is relative to the file.
    url: str = "sqlite+aiosqlite:///state/server.db"


@dataclass(frozen=True)
class WakeupSettings:
    """Limits of the wake-up API."""

    # Seconds a wake-up waits for its agents when not told.
    default_ttl: float = 900.0
    # The longest TTL a caller may ask for.
    max_ttl: float = 7 * 86400.0
    # Per caller (API token or console user): a bucket of ``burst`` requests
    # that refills at ``per_minute``.
    per_minute: float = 60.0
    burst: int = 20
    # How often pending wake-ups are checked for expiry.
    sweep_interval: float = 2.0


@dataclass(frozen=True)
class CampaignSettings:
    """Wake campaigns (docs/campaigns.md) and the server-wide cap on wake-ups
    and magic packets: at most ``cap`` sends in any ``cap_interval`` seconds
    (1E WakeUp's default, 1,000 per 30 s). Campaign sends beyond it wait;
    ad-hoc wake-ups and Wake-on-LAN are never held, but use the budget."""

    # Sends (a wake-up for one agent, or a Wake-on-LAN request for one
    # machine) per cap_interval, server-wide.
    cap: int = 1000
    # Seconds.
    cap_interval: float = 30.0
    # Seconds between the scheduler's rounds: how late a run may start.
    tick: float = 5.0
    # Seconds a replica holds a run it advances; another takes it over after.
    lease: float = 60.0

    def __post_init__(self) -> None:
        if self.cap < 1 or min(self.cap_interval, self.tick) <= 0 or self.lease <= self.tick:
            raise ValueError("campaigns: cap >= 1, cap_interval and tick positive, "
                             "lease longer than tick")


@dataclass(frozen=True)
class SyncSettings:
    """Admission control of the agents' sync endpoints."""

    # Largest sync report in bytes; beyond, 413.
    max_body: int = 1024 * 1024
    # Syncs served at once; the others wait for a slot (queue_wait), then get 429.
    max_concurrent: int = 64
    # Syncs that may wait for a slot at once; beyond, 429 at once.
    max_queued: int = 1024
    # Seconds a sync waits for a slot before its 429 (0: refuse at once).
    queue_wait: float = 5.0
    # Retry-After of that 429, in seconds (jittered up to 2x).
    retry_after: float = 10.0


@dataclass(frozen=True)
class PresenceSettings:
    """When an online agent whose presence has not been refreshed is shown as stale."""

    # Seconds without presence before an online agent shows as stale.
    stale_after: float = 3 * 300.0 * 1.5


@dataclass(frozen=True)
class BudgetSettings:
    """What one agent may make the server store and do. Any endpoint may be
    compromised; these bound what one can cost the fleet. Over a budget, a
    sync is refused with a reason the agent logs (429 or 422), and an MQTT
    message is dropped, counted and logged."""

    # MQTT messages (events and presence) per agent and minute, and the burst
    # (an ack and a sync report per wake-up, a birth per connect).
    events_per_minute: float = 120.0
    events_burst: int = 60
    # Sync reports per agent and minute, and the burst; beyond, 429.
    syncs_per_minute: float = 30.0
    syncs_burst: int = 10
    # The agent's stored inventory (its merged sync changes), as JSON bytes.
    inventory_bytes: int = 256 * 1024
    # History lines kept per agent; older ones are pruned every prune_interval s.
    history_rows: int = 1000
    prune_interval: float = 600.0

    def __post_init__(self) -> None:
        if min(self.events_per_minute, self.events_burst, self.syncs_per_minute,
               self.syncs_burst, self.inventory_bytes, self.history_rows,
               self.prune_interval) <= 0:
            raise ValueError("budgets: every budget must be positive")


@dataclass(frozen=True)
class NotificationSettings:
    """The offline notifier (where it tells is a run-time setting of the
    console). ``min_offline_after`` is the shortest offline threshold an admin
    may set: below a minute a reboot would page someone. Only the server's own
    config (file or environment), which the operator controls, can lower it;
    the tests do."""

    # Seconds between checks for offline agents.
    check_interval: float = 30.0
    # The floor described above, in seconds.
    min_offline_after: float = 60.0
    # Per webhook POST, and per SMTP step.
    timeout: float = 10.0
    # Seconds the server may be without its broker link before the operator
    # is told (the same webhook and email as for offline agents).
    broker_down_after: float = 60.0
    # CIDR networks the webhook and the SMTP host may be in (every address
    # their name resolves to, checked again at each send). Loopback,
    # link-local (cloud metadata), multicast and unspecified addresses are
    # refused unless a network here other than 0.0.0.0/0 or ::/0 names them:
    # add "127.0.0.1/32" for a mail relay on this host (epns.egress).
    allowed_networks: tuple[str, ...] = ("0.0.0.0/0", "::/0")

    def __post_init__(self) -> None:
        for network in self.allowed_networks:
            ipaddress.ip_network(network, strict=False)
        if min(self.check_interval, self.min_offline_after, self.timeout) <= 0:
            raise ValueError("notifications: check_interval, min_offline_after and timeout "
                             "must be positive")


@dataclass(frozen=True)
class ConsoleSettings:
    """The web console's login and session."""

    # Seconds a console login lasts at most, however active (the absolute end).
    session_max_age: float = 12 * 3600.0
    # Seconds without a request after which a console login ends (the idle end).
    session_idle_timeout: float = 3600.0
    # Failed logins allowed per address and user name together within
    # failed_login_window (a browser that logged in as that user before is
    # counted apart from its address: docs/security.md).
    failed_login_limit: int = 5
    # Failed logins allowed per address, over all user names, within the window.
    failed_login_source_limit: int = 30
    # Seconds.
    failed_login_window: float = 300.0
    # Where the server's own secret is kept (0600, made on first start): it
    # signs the console's device cookies. The first admin password is in
    # <state_dir>/initial-admin-password until it is changed.
    secrets_file: Path = Path("state/server-secrets.json")


@dataclass(frozen=True)
class WolSendSettings:
    """Where the server's own magic packets may go, whatever the settings page
    says: an operator's fence (the page is editable through the API)."""

    # CIDR networks the server's own magic packets may be sent to.
    allowed_networks: tuple[str, ...] = ("0.0.0.0/0", "::/0")

    def __post_init__(self) -> None:
        for network in self.allowed_networks:
            ipaddress.ip_network(network)


@dataclass(frozen=True)
class BrokerAuthSettings:
    """The HTTP auth and ACL endpoint for an external broker (EMQX, Mosquitto
    with mosquitto-go-auth) whose token agents the server vouches for. The
    broker logs in with HTTP Basic ``username``/``secret``; an empty secret
    turns the endpoint off (404), so it is never an open password oracle."""

    # The broker's HTTP Basic user name.
    username: str = "broker"
    # Its password, at least 16 characters; empty turns the endpoint off.
    secret: str = ""
    # Wrong Basic credentials per peer address: a bucket of ``failure_burst``
    # that refills at ``failures_per_minute``; beyond it, 429 for wrong ones
    # (the right credentials always pass).
    failures_per_minute: float = 10.0
    failure_burst: int = 10

    def __post_init__(self) -> None:
        if self.secret and len(self.secret) < 16:
            raise ValueError("broker_auth.secret must be at least 16 characters")
        if ":" in self.username:
            raise ValueError("broker_auth.username must not contain ':' (HTTP Basic)")


@dataclass(frozen=True)
class ClusterSettings:
    """Several servers on one PostgreSQL (docs/scale-out.md). ``single``: this
    server does everything. ``leader``: the replica holding a PostgreSQL
    advisory lock does the shared work (sweepers, notifier) and holds the one
    broker session, whose ``mqtt.client_id`` and certificate every replica
    shares, so the session and the events queued in it pass from leader to
    leader; followers hand their commands to it. ``shared``: every replica
    keeps its own session (its own ``mqtt.client_id`` and certificate) and
    takes its share of the events through a ``$share/<share_group>/``
    subscription (Mosquitto; not the epns broker); the lock holder still does
    the shared work."""

    # single, leader or shared: see the section's text.
    mode: Literal["single", "leader", "shared"] = "single"
    # The $share group name (mode = shared).
    share_group: str = "epns-server"
    # How often a replica tries for the lock, and the leader checks it still holds it.
    elect_interval: float = 2.0

    def __post_init__(self) -> None:
        if self.elect_interval <= 0:
            raise ValueError("cluster.elect_interval must be positive")


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``epns-server`` needs, frozen and passed down."""

    http: HttpSettings = field(default_factory=HttpSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    broker: EmbeddedBrokerSettings = field(default_factory=EmbeddedBrokerSettings)
    pki: PkiSettings = field(default_factory=PkiSettings)
    identity: AgentIdentitySettings = field(default_factory=AgentIdentitySettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    wakeups: WakeupSettings = field(default_factory=WakeupSettings)
    campaigns: CampaignSettings = field(default_factory=CampaignSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    wol: WolSendSettings = field(default_factory=WolSendSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    broker_auth: BrokerAuthSettings = field(default_factory=BrokerAuthSettings)
    enrol: EnrolSettings = field(default_factory=EnrolSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    log: LogSettings = field(default_factory=LogSettings)
    state_dir: Path = Path("state")

    @property
    def front_socket(self) -> Path | None:
        """The front socket (``http.front``), if on."""
        return self.state_dir / FRONT_SOCKET if self.http.front else None


def load_server_settings(path: Path | None, env: Mapping[str, str]) -> ServerSettings:
    """Load the server's settings; a ConfigError says what is wrong."""
    settings = config.load(ServerSettings, path, env, ENV_PREFIX)
    if path is not None:
        settings = _resolve_paths(settings, path.parent)
    return settings


def _resolve_paths(settings: Any, base: Path) -> Any:
    """Relative file paths in a config file are relative to that file; a SQLite
    URL's path too."""
    changes: dict[str, Any] = {}
    for spec in fields(settings):
        value = getattr(settings, spec.name)
        if isinstance(value, Path) and not value.is_absolute():
            changes[spec.name] = base / value
        elif is_dataclass(value) and not isinstance(value, type):
            changes[spec.name] = _resolve_paths(value, base)
    if isinstance(settings, DatabaseSettings):
        changes["url"] = _resolve_sqlite(settings.url, base)
    try:
        return replace(settings, **changes)
    except ValueError as exc:  # pragma: no cover - replace re-runs validation
        raise ConfigError(str(exc)) from exc


def _resolve_sqlite(url: str, base: Path) -> str:
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.startswith("sqlite") or rest.startswith("/") or not rest:
        return url
    return f"{scheme}:///{base / rest}"
