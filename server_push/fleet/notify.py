"""Offline notifications: say when an agent has been offline longer than the
``notifications`` settings' ``offline_after``.

Every ``notifications.check_interval`` seconds (server config) the notifier
takes the agents shown ``offline`` (since the server learnt it) or ``stale``
(since they were last heard from), not revoked, and offline for longer than
the threshold. Each gets one webhook POST (JSON ``{"agent_id",
"offline_since", "last_seen", "presence"}``) and/or one email per offline
period. A channel that succeeded is written into the agent's history
(``notified``), which is how the next round, or a restarted server, knows not
to repeat it; a channel that failed is logged and tried again next round.

While the server has lost the broker every agent shows stale; the server
cannot know who is really away, so nothing is sent about agents until the
link is back. The lost link is news of its own: once it has been down for
``notifications.broker_down_after`` seconds, every channel gets one
``{"event": "broker_link_down", "down_since", "reason"}`` (and an email), and
one ``broker_link_restored`` when it is back. Push is stopped for the whole
fleet meanwhile: wake-ups are accepted and held, not sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns import egress
from epns.errors import EgressRefused
from epns.logs import event
from epns.server_config import NotificationSettings
from server_push.fleet.registry import AgentView, Registry
from server_push.link import egress as egress_link
from server_push.link.mqtt_link import LinkHealth
from server_push.store.history import remember
from server_push.store.models import AgentEvent
from server_push.store.settings_store import NotificationsConfig, SettingsStore

log = logging.getLogger(__name__)

NOTIFIED = "notified"
WEBHOOK = "webhook"
EMAIL = "email"
# Agent ids per history query: well under SQLite's bound-parameter limit.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Offline:
    """An agent offline too long, as the webhook and the email tell it."""

    agent_id: str
    offline_since: float
    last_seen: float | None
    presence: str

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {"agent_id": self.agent_id, "offline_since": self.offline_since,
                "last_seen": self.last_seen, "presence": self.presence}


@dataclass(frozen=True, slots=True)
class LinkNews:
    """The server lost its broker link, or has it back."""

    event: str
    down_since: float
    reason: str

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {"event": self.event, "down_since": self.down_since, "reason": self.reason}

    def subject(self) -> str:
        """The email's subject."""
        if self.event == "broker_link_down":
            return ("epns: push stopped, the server has lost the broker since "
                    f"{_stamp(self.down_since)}")
        return "epns: push works again, the server has its broker link back"

    def text(self) -> str:
        """The email's body."""
        if self.event == "broker_link_down":
            return (f"The server has had no MQTT session to the broker since "
                    f"{_stamp(self.down_since)} (UTC): {self.reason}.\n"
                    "Wake-ups are accepted and held; they are sent when the link is back.\n"
                    "The server keeps reconnecting; see its log (broker_link_down).\n")
        return (f"The broker link, down since {_stamp(self.down_since)} (UTC), is back; "
                "held wake-ups are being sent.\n")


def offline_too_long(views: Iterable[AgentView], now: float,
                     offline_after: float) -> list[Offline]:
    """The agents offline (or stale) for more than ``offline_after`` seconds."""
    found = []
    for view in views:
        if view.revoked:
            continue  # revoked on purpose: being away is expected
        if view.presence == "offline":
            since = view.presence_at
        elif view.presence == "stale":
            since = view.last_seen or view.presence_at
        else:
            continue
        if since is not None and now - since > offline_after:
            found.append(Offline(view.id, since, view.last_seen, view.presence))
    return found


def channels(config: NotificationsConfig) -> list[str]:
    """The channels the settings configure."""
    named = [WEBHOOK] if config.webhook_url else []
    return named + ([EMAIL] if config.smtp_host and config.smtp_to else [])


def _stamp(at: float | None) -> str:
    return "never" if at is None else dt.datetime.fromtimestamp(at, dt.UTC).isoformat(
        timespec="seconds")


def compose(config: NotificationsConfig, subject: str, text: str) -> EmailMessage:
    """One notification email, from and to the addresses of the settings."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = config.smtp_from or "epns@localhost"
    message["To"] = config.smtp_to
    message["Date"] = formatdate(localtime=False)
    message.set_content(text)
    return message


def email_for(config: NotificationsConfig, item: Offline) -> EmailMessage:
    """The email about one agent."""
    return compose(
        config, f"epns: agent {item.agent_id} offline since {_stamp(item.offline_since)}",
        f"Agent {item.agent_id} has been {item.presence} since {_stamp(item.offline_since)} "
        f"(UTC).\nLast heard from: {_stamp(item.last_seen)}.\n\n"
        "You get one message per offline period; the threshold is the console's "
        "notifications setting 'offline_after'.\n")


def send_messages(config: NotificationsConfig, messages: Sequence[EmailMessage],
                  timeout: float, address: str | None = None) -> tuple[int, str | None]:
    """Send ``messages`` over one SMTP session (blocking: run it in a thread),
    to ``address`` (the SMTP host's checked address) or the host itself.
    Returns how many were accepted, in order, and the error that stopped the
    rest (None when all went)."""
    sent = 0
    try:
        with smtplib.SMTP(address or config.smtp_host, config.smtp_port,
                          timeout=timeout) as smtp:
            for message in messages:
                smtp.send_message(message)
                sent += 1
    except OSError as exc:  # smtplib's errors are OSErrors too
        return sent, f"{type(exc).__name__}: {exc}"
    return sent, None


def send_emails(config: NotificationsConfig, items: Sequence[Offline],
                timeout: float, address: str | None = None) -> tuple[list[str], str | None]:
    """One email per agent over one SMTP session (blocking). Returns the agents
    whose email was accepted, and the error that stopped the rest."""
    sent, error = send_messages(config, [email_for(config, item) for item in items], timeout,
                                address)
    return [item.agent_id for item in items[:sent]], error


class Notifier:
    """The loop described in the module docstring."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], registry: Registry,
                 config: SettingsStore, settings: NotificationSettings,
                 link: Callable[[], LinkHealth]) -> None:
        self._sessions = sessions
        self._registry = registry
        self._config = config
        self._settings = settings
        self._link = link
        # Where the webhook and the SMTP host may be (link/egress.py).
        self._allowed = egress.parse_networks(settings.allowed_networks)
        # The outage (its down_since) the operator was told of, if any.
        self._told_down: float | None = None

    async def run(self) -> None:
        """Check every ``check_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._settings.check_interval)
            try:
                await self.check(time.time())
            except Exception as exc:  # the notifier must outlive a bad round
                event(log, "notify_failed", logging.ERROR, error=repr(exc))

    async def check(self, now: float) -> None:
        """One round: the broker link's news, then every agent that is due on
        every channel."""
        config = await self._config.notifications()
        wanted = channels(config)
        if not wanted:
            return
        await self._check_link(config, wanted, now)
        if not self._registry.link_up:
            return
        offline = offline_too_long(await self._registry.all(now), now, config.offline_after)
        if not offline:
            return
        done = await self._notified(offline)
        for channel in wanted:
            due = [item for item in offline if channel not in done.get(item.agent_id, ())]
            if due:
                sent = await (self._webhook(config, due) if channel == WEBHOOK
                              else self._email(config, due))
                await self._remember(sent, now)

    async def _check_link(self, config: NotificationsConfig, wanted: list[str],
                          now: float) -> None:
        health = self._link()
        since = health.down_since
        if since is not None and self._told_down != since:
            if now - since < self._settings.broker_down_after:
                return
            news = LinkNews("broker_link_down", since, health.reason or "")
            self._told_down = since
        elif since is None and self._told_down is not None:
            news = LinkNews("broker_link_restored", self._told_down, "")
            self._told_down = None
        else:
            return
        event(log, news.event, logging.ERROR if since is not None else logging.INFO,
              down_since=_stamp(news.down_since), reason=news.reason, channels=",".join(wanted))
        for channel in wanted:
            if channel == WEBHOOK:
                await self._post_news(config, news)
            else:
                address = await self._smtp_address(config, [], news.event)
                if address is not None:
                    await asyncio.to_thread(self._mail_news, config, news, address)

    async def _webhook_target(self, config: NotificationsConfig, items: Sequence[Offline],
                              context: str = "") -> dict[str, Any] | None:
        """The pinned request to the webhook, or None (logged) when it is
        fenced off or does not resolve."""
        try:
            return await egress_link.webhook_target(config.webhook_url, self._allowed)
        except (EgressRefused, OSError, TimeoutError, httpx.InvalidURL) as exc:
            self._failed(WEBHOOK, items, f"{context}{exc}")
            return None

    async def _smtp_address(self, config: NotificationsConfig, items: Sequence[Offline],
                            context: str = "") -> str | None:
        """The SMTP host's checked address, or None (logged)."""
        try:
            return await egress_link.checked_address(config.smtp_host, config.smtp_port,
                                                     self._allowed, "the SMTP host")
        except (EgressRefused, OSError, TimeoutError) as exc:
            self._failed(EMAIL, items, f"{context}{exc}")
            return None

    async def _post_news(self, config: NotificationsConfig, news: LinkNews) -> None:
        target = await self._webhook_target(config, [], f"{news.event}: ")
        if target is None:
            return
        try:
            async with httpx.AsyncClient(timeout=self._settings.timeout) as client:
                answer = await client.post(**target, json=news.payload())
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._failed(WEBHOOK, [], f"{news.event}: {type(exc).__name__}: {exc}")
            return
        if not answer.is_success:
            self._failed(WEBHOOK, [], f"{news.event}: answered {answer.status_code}")

    def _mail_news(self, config: NotificationsConfig, news: LinkNews, address: str) -> None:
        _, error = send_messages(config, [compose(config, news.subject(), news.text())],
                                 self._settings.timeout, address)
        if error is not None:
            self._failed(EMAIL, [], f"{news.event}: {error}")

    async def _notified(self, offline: Sequence[Offline]) -> dict[str, set[str]]:
        """The channels already used per agent in its current offline period."""
        since = {item.agent_id: item.offline_since for item in offline}
        done: dict[str, set[str]] = {}
        ids = list(since)
        async with self._sessions() as session:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                rows = (await session.execute(
                    select(AgentEvent.agent_id, AgentEvent.at, AgentEvent.detail).where(
                        AgentEvent.kind == NOTIFIED, AgentEvent.agent_id.in_(chunk),
                        AgentEvent.at >= min(since[i] for i in chunk)))).all()
                for row in rows:
                    if row.at >= since[row.agent_id]:
                        done.setdefault(row.agent_id, set()).add(row.detail.partition(":")[0])
        return done

    async def _webhook(self, config: NotificationsConfig,
                       due: Sequence[Offline]) -> list[tuple[str, str]]:
        sent: list[tuple[str, str]] = []
        target = await self._webhook_target(config, due)
        if target is None:
            return sent
        async with httpx.AsyncClient(timeout=self._settings.timeout) as client:
            for index, item in enumerate(due):
                try:
                    answer = await client.post(**target, json=item.payload())
                except httpx.HTTPError as exc:
                    # The endpoint is down: the others would wait for the same timeout.
                    self._failed(WEBHOOK, due[index:], f"{type(exc).__name__}: {exc}")
                    break
                if answer.is_success:
                    sent.append((item.agent_id, f"{WEBHOOK}: answered {answer.status_code}"))
                else:
                    self._failed(WEBHOOK, [item], f"answered {answer.status_code}")
        return sent

    async def _email(self, config: NotificationsConfig,
                     due: Sequence[Offline]) -> list[tuple[str, str]]:
        address = await self._smtp_address(config, due)
        if address is None:
            return []
        ids, error = await asyncio.to_thread(send_emails, config, due, self._settings.timeout,
                                             address)
        if error is not None:
            self._failed(EMAIL, [item for item in due if item.agent_id not in ids], error)
        return [(agent_id, f"{EMAIL}: to {config.smtp_to}") for agent_id in ids]

    @staticmethod
    def _failed(channel: str, items: Sequence[Offline], error: str) -> None:
        event(log, "notify_channel_failed", logging.WARNING, channel=channel,
              agents=",".join(i.agent_id for i in items[:20]), count=len(items), error=error,
              action="retried next round")

    async def _remember(self, sent: Sequence[tuple[str, str]], now: float) -> None:
        if not sent:
            return
        async with self._sessions() as session, session.begin():
            for agent_id, detail in sent:
                remember(session, agent_id, now, NOTIFIED, detail)
        for agent_id, detail in sent:
            event(log, "agent_offline_notified", agent=agent_id, channel=detail)
