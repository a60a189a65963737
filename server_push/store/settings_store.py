"""Settings an admin changes at run time (console settings page, API), kept
in the database as JSON and checked on the way in.

- ``wol``: the addresses the server itself sends magic packets to (multicast
  and broadcast), the ports, relays per subnet, how long to wait for a
  target to come online, and whether one agent per subnet is kept awake
  (``keep_awake``, ``fleet/keep_awake.py``);
- ``hints``: what agents are told at sync: sync interval and keep-alive per
  route kind;
- ``notifications``: where to say that an agent has been offline too long.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import egress
from epns.errors import BadRequest
from epns.sync_contract import KEEPALIVE_RANGE, MAX_SYNC_INTERVAL, MIN_SYNC_INTERVAL, ROUTE_KINDS
from server_push.store.models import Setting


@dataclass(frozen=True)
class WolConfig:
    """Wake-on-LAN dispatch settings."""

    addresses: tuple[str, ...] = ()
    ports: tuple[int, ...] = (7, 9)
    relays_per_subnet: int = 3
    repeat: int = 3
    timeout: float = 300.0
    # Elect one agent per subnet to hold off sleep, so a relay stays awake.
    keep_awake: bool = False


@dataclass(frozen=True)
class HintsConfig:
    """What agents are told at each sync."""

    sync_interval: float = 600.0
    keepalive: dict[str, int] = field(default_factory=dict)


# The default floor of offline_after; see epns.server_config.NotificationSettings.
MIN_OFFLINE_AFTER = 60.0


@dataclass(frozen=True)
class NotificationsConfig:
    """Offline notifications: an agent offline longer than ``offline_after`` s."""

    offline_after: float = 3600.0
    webhook_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_to: str = ""


# What int()/float() raise for a value of the wrong kind; OverflowError is
# int(inf): Python's JSON reader turns Infinity and 1e400 into an infinite float.
_NOT_A_VALUE = (TypeError, ValueError, OverflowError)


def _check_wol(data: dict[str, Any]) -> WolConfig:
    keep_awake = data.get("keep_awake", False)
    if not isinstance(keep_awake, bool):
        raise BadRequest(f"wol settings: keep_awake must be true or false, not {keep_awake!r}",
                         code="invalid_settings")
    try:
        config = WolConfig(
            addresses=tuple(str(ipaddress.ip_address(str(a))) for a in data.get("addresses", [])),
            ports=tuple(int(p) for p in data.get("ports", [7, 9])),
            relays_per_subnet=int(data.get("relays_per_subnet", 3)),
            repeat=int(data.get("repeat", 3)),
            timeout=float(data.get("timeout", 300.0)),
            keep_awake=keep_awake,
        )
    except _NOT_A_VALUE as exc:
        raise BadRequest(f"wol settings: {exc}", code="invalid_settings") from exc
    if not config.ports or any(not 1 <= p <= 65535 for p in config.ports):
        raise BadRequest("wol settings: ports must be 1-65535", code="invalid_settings")
    if not 1 <= config.relays_per_subnet <= 20 or not 1 <= config.repeat <= 10:
        raise BadRequest("wol settings: relays_per_subnet 1-20, repeat 1-10",
                         code="invalid_settings")
    if not 10 <= config.timeout <= 3600:
        raise BadRequest("wol settings: timeout 10-3600 s", code="invalid_settings")
    return config


def _check_hints(data: dict[str, Any]) -> HintsConfig:
    try:
        interval = float(data.get("sync_interval", 600.0))
        keepalive = {str(k): int(v) for k, v in dict(data.get("keepalive") or {}).items()}
    except _NOT_A_VALUE as exc:
        raise BadRequest(f"hints: {exc}", code="invalid_settings") from exc
    if not MIN_SYNC_INTERVAL <= interval <= MAX_SYNC_INTERVAL:
        raise BadRequest(f"hints: sync_interval must be {MIN_SYNC_INTERVAL:.0f}-"
                         f"{MAX_SYNC_INTERVAL:.0f} s", code="invalid_settings")
    for kind, seconds in keepalive.items():
        if kind not in ROUTE_KINDS or not KEEPALIVE_RANGE[0] <= seconds <= KEEPALIVE_RANGE[1]:
            raise BadRequest(f"hints: keepalive.{kind} must be a route kind "
                             f"({', '.join(ROUTE_KINDS)}) with {KEEPALIVE_RANGE[0]}-"
                             f"{KEEPALIVE_RANGE[1]} s", code="invalid_settings")
    return HintsConfig(interval, keepalive)


def _check_notifications(data: dict[str, Any],
                         min_offline_after: float = MIN_OFFLINE_AFTER) -> NotificationsConfig:
    try:
        config = NotificationsConfig(
            offline_after=float(data.get("offline_after", 3600.0)),
            webhook_url=str(data.get("webhook_url", "")),
            smtp_host=str(data.get("smtp_host", "")),
            smtp_port=int(data.get("smtp_port", 25)),
            smtp_from=str(data.get("smtp_from", "")),
            smtp_to=str(data.get("smtp_to", "")),
        )
    except _NOT_A_VALUE as exc:
        raise BadRequest(f"notifications: {exc}", code="invalid_settings") from exc
    if config.webhook_url and not config.webhook_url.startswith(("https://", "http://")):
        raise BadRequest("notifications: webhook_url must be an http(s) URL",
                         code="invalid_settings")
    if not min_offline_after <= config.offline_after <= 30 * 86400:
        raise BadRequest(f"notifications: offline_after {min_offline_after:g} s - 30 days",
                         code="invalid_settings")
    return config


Section = WolConfig | HintsConfig | NotificationsConfig
_CHECKS: dict[str, Callable[[dict[str, Any]], Section]] = {
    "wol": _check_wol, "hints": _check_hints, "notifications": _check_notifications}


class SettingsStore:
    """Typed read and checked write of the run-time settings."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 min_offline_after: float = MIN_OFFLINE_AFTER,
                 allowed_networks: Sequence[str] = ("0.0.0.0/0", "::/0")) -> None:
        self._sessions = sessions
        self._min_offline_after = min_offline_after
        self._allowed = egress.parse_networks(allowed_networks)
        self._checks: dict[str, Callable[[dict[str, Any]], Section]] = {
            **_CHECKS, "notifications": self._check_notifications}

    async def _raw(self, key: str) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await session.get(Setting, key)
        return dict(row.value) if row is not None and isinstance(row.value, dict) else {}

    async def wol(self) -> WolConfig:
        """The WoL settings."""
        return _check_wol(await self._raw("wol"))

    async def hints(self) -> HintsConfig:
        """The hints agents get at sync."""
        return _check_hints(await self._raw("hints"))

    async def notifications(self) -> NotificationsConfig:
        """The offline notification settings."""
        return self._check_notifications(await self._raw("notifications"))

    def _check_notifications(self, data: dict[str, Any]) -> NotificationsConfig:
        return _check_notifications(data, self._min_offline_after)

    def _check_targets(self, config: NotificationsConfig) -> None:
        """Refuse a webhook or SMTP host given as a fenced-off address
        (``epns.egress``) when it is saved; names are checked at each send,
        where they are resolved."""
        targets = [("webhook_url", urllib.parse.urlsplit(config.webhook_url).hostname or ""),
                   ("smtp_host", config.smtp_host)]
        for field_name, host in targets:
            address = egress.literal(host)
            if address is None and host.lower().rstrip(".") in ("localhost", "localhost6"):
                address = egress.literal("127.0.0.1")
            why = None if address is None else egress.refusal(
                address, self._allowed, "notifications.allowed_networks")
            if why is not None:
                raise BadRequest(f"notifications: {field_name} {host!r}: {why}",
                                 code="target_not_allowed")

    async def read(self, key: str) -> dict[str, Any]:
        """One section as plain JSON; BadRequest for an unknown section."""
        check = self._checks.get(key)
        if check is None:
            raise BadRequest(f"no settings section {key!r} (one of {', '.join(_CHECKS)})",
                             code="unknown_settings")
        return asdict(check(await self._raw(key)))

    async def write(self, key: str, data: dict[str, Any]) -> dict[str, Any]:
        """Check and store one section; returns it as stored."""
        check = self._checks.get(key)
        if check is None:
            raise BadRequest(f"no settings section {key!r} (one of {', '.join(_CHECKS)})",
                             code="unknown_settings")
        checked = check(data)
        if isinstance(checked, NotificationsConfig):
            self._check_targets(checked)
        plain = asdict(checked)
        async with self._sessions() as session, session.begin():
            row = await session.get(Setting, key)
            if row is None:
                session.add(Setting(key=key, value=plain))
            else:
                row.value = plain
        return plain
