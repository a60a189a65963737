"""The server's parts, built once from the settings and shared by the API,
the console and the broker consumer (``app.state.services``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from epns import pki
from epns.logs import event
from epns.server_config import ServerSettings
from server_push import db
from server_push.agents import AgentAdmin
from server_push.auth import AgentAuthenticator, Credentials
from server_push.bus import Bus
from server_push.events import Dispatcher
from server_push.mqtt_link import BrokerLink
from server_push.notify import Notifier
from server_push.outbox import Outbox
from server_push.ratelimit import RateLimiter
from server_push.registry import Registry
from server_push.revocations import RevocationStore
from server_push.settings_store import SettingsStore
from server_push.tasks import Tasks
from server_push.wakeups import Wakeups
from server_push.wol import WolDispatch
from server_push.wol_sender import allowed_networks

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler may need."""

    settings: ServerSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    link: BrokerLink
    outbox: Outbox
    registry: Registry
    wakeups: Wakeups
    tasks: Tasks
    agents: AgentAdmin
    credentials: Credentials
    agent_auth: AgentAuthenticator
    config: SettingsStore
    revocations: RevocationStore
    wake_limiter: RateLimiter
    sync_slots: asyncio.Semaphore
    wol: WolDispatch
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _dispatcher: Dispatcher | None = None

    async def on_message(self, topic: str, raw: bytes) -> None:
        """The broker link's handler."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self.registry, self.wakeups, self.wol)
        await self._dispatcher.handle(topic, raw)

    async def on_connect(self) -> None:
        """The broker link is up: presence is live again; re-send held commands."""
        self.registry.link_up = True
        self.bus.publish({"kind": "link", "up": True})
        await self.wakeups.record_published(await self.outbox.flush())

    def start(self) -> None:
        """Start the broker link, the sweepers and the offline notifier."""
        notifier = Notifier(self.sessions, self.registry, self.config,
                            self.settings.notifications)
        self._tasks = [asyncio.create_task(self._link_loop(), name="broker-link"),
                       asyncio.create_task(self.wakeups.run_sweeper(), name="wake-sweeper"),
                       asyncio.create_task(self.wol.run_sweeper(), name="wol-sweeper"),
                       asyncio.create_task(notifier.run(), name="offline-notifier")]

    async def _link_loop(self) -> None:
        watcher = asyncio.create_task(self._watch_link())
        try:
            await self.link.run()
        finally:
            watcher.cancel()

    async def _watch_link(self) -> None:
        while True:
            await self.link.connected.wait()
            while self.link.connected.is_set():
                await asyncio.sleep(0.5)
            self.registry.link_up = False
            self.bus.publish({"kind": "link", "up": False})

    async def stop(self) -> None:
        """Stop the background work and close the database."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engine.dispose()
        event(log, "services_stopped")


async def build(settings: ServerSettings) -> Services:
    """Open and migrate the database and wire the parts together."""
    engine = db.create_engine(settings.database.url)
    await db.migrate(engine)
    sessions = db.sessions(engine)
    bus = Bus()
    key = pki.load_signing_key(settings.pki.dir / pki.SIGNING_KEY)
    revocations = RevocationStore(settings.pki.dir / pki.REVOKED)
    registry = Registry(sessions, bus, settings.presence)
    holder: dict[str, Services] = {}

    async def on_message(topic: str, raw: bytes) -> None:
        await holder["services"].on_message(topic, raw)

    async def on_connect() -> None:
        await holder["services"].on_connect()

    link = BrokerLink(settings.mqtt, on_message, on_connect)
    outbox = Outbox(sessions, key, link)
    config = SettingsStore(sessions, settings.notifications.min_offline_after)
    services = Services(
        settings=settings, engine=engine, sessions=sessions, bus=bus, link=link, outbox=outbox,
        registry=registry, wakeups=Wakeups(sessions, outbox, bus, settings.wakeups),
        tasks=Tasks(sessions), agents=AgentAdmin(sessions, settings, revocations, bus),
        credentials=Credentials(sessions),
        agent_auth=AgentAuthenticator(sessions, key.public_key(), revocations),
        config=config, revocations=revocations,
        wake_limiter=RateLimiter(settings.wakeups.per_minute, settings.wakeups.burst),
        sync_slots=asyncio.Semaphore(settings.sync.max_concurrent),
        wol=WolDispatch(sessions, outbox, bus, registry, config=config,
                        sweep_interval=settings.wakeups.sweep_interval,
                        allowed=allowed_networks(settings.wol.allowed_networks)))
    holder["services"] = services
    return services
