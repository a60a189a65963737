"""The server's parts, built once from the settings and shared by the API,
the console and the broker consumer (``app.state.services``).

With several servers on one PostgreSQL (``[cluster]``, docs/scale-out.md) the
work every replica shares (sweepers, notifier, pruning) runs on the elected
leader only; in ``leader`` mode the broker session does too, and a follower
hands its staged commands to the leader; in ``shared`` mode every replica
keeps its own session and takes its share of the events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from epns import pki, topics
from epns.envelope import TARGET_ALL, Command, CommandType
from epns.errors import ConfigError
from epns.logs import event
from epns.server_config import ServerSettings
from server_push.fleet.agents import AgentAdmin
from server_push.fleet.bus import Bus
from server_push.fleet.campaigns import Campaigns
from server_push.fleet.enrol import Enrolment
from server_push.fleet.events import Dispatcher
from server_push.fleet.gauges import GAUGE_TTL, GaugeReader
from server_push.fleet.keep_awake import KeepAwake
from server_push.fleet.notify import Notifier
from server_push.fleet.registry import Registry
from server_push.fleet.tasks import Tasks
from server_push.fleet.wakeups import Wakeups
from server_push.fleet.wol import WolDispatch
from server_push.link.cluster import Cluster
from server_push.link.metrics import ServerMetrics
from server_push.link.mqtt_link import SUBSCRIPTIONS, BrokerLink, LinkHealth, shared_subscriptions
from server_push.link.outbox import Outbox
from server_push.link.wol_sender import allowed_networks
from server_push.security.auth import AgentAuthenticator, Credentials
from server_push.security.ratelimit import RateLimiter
from server_push.security.revocations import RevocationStore
from server_push.security.rotation import TrustWatch
from server_push.security.sync_admission import SyncAdmission
from server_push.store import db
from server_push.store.handled import HandledEvents
from server_push.store.history import prune_history
from server_push.store.settings_store import SettingsStore

log = logging.getLogger(__name__)

# Over MQTT a trust announcement reaches the agents online now; the others
# find it in their next sync reply, so it need not wait for them.
TRUST_TTL = 300.0


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
    sync_admission: SyncAdmission
    wol: WolDispatch
    handled: HandledEvents
    metrics: ServerMetrics
    sync_budget: RateLimiter
    # The signing key and the trust agents are given (key rotation).
    trust: TrustWatch
    # The database's gauges for /metrics, cached (fleet/gauges.py).
    gauges: GaugeReader
    cluster: Cluster | None = None
    # Wake campaigns and their scheduler (fleet/campaigns.py), made after the rest.
    campaigns: Campaigns = field(init=False)
    # One agent kept awake per subnet (fleet/keep_awake.py), made after the rest.
    keep_awake: KeepAwake = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _dispatcher: Dispatcher | None = None
    _flush_wanted: asyncio.Event = field(default_factory=asyncio.Event)

    def enrolment(self) -> Enrolment:
        """The enrolment service over this database and these agents."""
        return Enrolment(self.sessions, self.agents, self.settings.enrol.pending_ttl, self.bus)

    async def on_message(self, topic: str, raw: bytes) -> None:
        """The broker link's handler."""
        if self._dispatcher is None:
            budgets = self.settings.budgets
            self._dispatcher = Dispatcher(self.registry, self.wakeups, self.wol, self.handled,
                                          metrics=self.metrics, keep_awake=self.keep_awake,
                                          events_per_minute=budgets.events_per_minute,
                                          events_burst=budgets.events_burst)
        await self._dispatcher.handle(topic, raw)

    async def on_connect(self) -> None:
        """The broker link is up: presence is live again; re-send held commands."""
        self.registry.link_up = True
        self.bus.publish({"kind": "link", "up": True})
        await self.wakeups.record_published(await self.outbox.flush())

    def start(self) -> None:
        """Start the broker link, the sweepers and the offline notifier (in a
        cluster: the election, and the leader's part once elected)."""
        mode = self.settings.cluster.mode
        if self.cluster is None:
            work = [self._link_loop(), self._shared_work()]
        elif mode == "shared":
            work = [self._link_loop(), self.cluster.run(self._shared_work)]
        else:
            work = [self.cluster.run(self._lead_with_link)]
        # Every replica signs: each follows a key rotation itself.
        work.append(self._watch_trust())
        self._tasks = [asyncio.create_task(job) for job in work]

    async def _watch_trust(self) -> None:
        """Follow ``rotate`` steps; announce a new trust to every agent online.
        Agents offline now get it in their next sync reply. At start, a
        rotation under way is announced again (the server may have been down
        when it began); agents take a repeat as a no-op."""
        if self.trust.rotation.in_progress() or self.trust.rotation.ca_in_progress():
            await self.announce_trust()
        while True:
            await asyncio.sleep(self.settings.pki.rotation_check_interval)
            if self.trust.refresh():
                await self.announce_trust()

    async def announce_trust(self) -> None:
        """Stage and send the current trust announcement to every agent."""
        announcement = self.trust.rotation.announcement
        if announcement is None:
            return
        now = time.time()
        command = Command(CommandType.TRUST, TARGET_ALL, now, now + TRUST_TTL,
                          {"announcement": announcement.decode()})
        async with self.sessions() as session, session.begin():
            self.outbox.stage(session, command, topics.ALL_CMD)
        await self.outbox.send([command.id])
        event(log, "trust_announced", serial=self.trust.rotation.trust.serial, id=command.id)

    async def _shared_work(self) -> None:
        """What one replica does for all: expiry sweeps, offline notices, pruning."""
        notifier = Notifier(self.sessions, self.registry, self.config,
                            self.settings.notifications, link=self._link_state)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._prune_history(), name="history-pruner")
            group.create_task(self.wakeups.run_sweeper(), name="wake-sweeper")
            group.create_task(self.wol.run_sweeper(), name="wol-sweeper")
            group.create_task(notifier.run(), name="offline-notifier")
            group.create_task(self.handled.run_pruner(), name="handled-pruner")
            group.create_task(self.campaigns.run_scheduler(), name="campaign-scheduler")
            group.create_task(self.keep_awake.run(), name="keep-awake")

    async def _lead_with_link(self) -> None:
        """``leader`` mode, while elected: the broker session (persistent, one
        client id for every replica, so it passes on with the events queued in
        it), publishing for the followers, and the shared work."""
        self.outbox.hand_off = None
        self.registry.link_up = False
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._link_loop(), name="broker-link")
                group.create_task(self._flush_for_followers(), name="outbox-flusher")
                group.create_task(self._shared_work())
        finally:
            self.outbox.hand_off = self._hand_off

    def _link_state(self) -> LinkHealth:
        """The broker link's health as the offline notifier should judge it: a
        follower in leader mode has no session, and trusts the leader's word."""
        if self.settings.cluster.mode == "leader" and self.role == "follower":
            return LinkHealth(down_since=None, reason=None)
        return self.link.health

    async def _prune_history(self) -> None:
        """Keep at most ``budgets.history_rows`` lines per agent: a chatty or
        hostile agent cannot grow its history without bound."""
        budgets = self.settings.budgets
        while True:
            await asyncio.sleep(budgets.prune_interval)
            try:
                pruned = await prune_history(self.sessions, budgets.history_rows)
            except Exception as exc:  # asyncpg's OSErrors too: the shared work must go on
                event(log, "history_prune_failed", logging.ERROR, error=repr(exc),
                      action=f"tried again in {budgets.prune_interval:g} s")
                continue
            self.metrics.history_rows_pruned += pruned
            if pruned:
                event(log, "history_pruned", rows=pruned, kept_per_agent=budgets.history_rows)

    def _hand_off(self) -> None:
        assert self.cluster is not None
        self.cluster.tell({"kind": "outbox"})

    async def _flush_for_followers(self) -> None:
        """Publish what followers staged: when one says so, and every
        ``elect_interval`` in case a notice was lost."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(),
                                       self.settings.cluster.elect_interval)
            self._flush_wanted.clear()
            if self.link.connected.is_set():
                await self.wakeups.record_published(await self.outbox.flush())

    @property
    def role(self) -> str:
        """``single``, or ``leader`` or ``follower`` in a cluster."""
        if self.cluster is None:
            return "single"
        return "leader" if self.cluster.leading else "follower"

    def broker_up(self) -> bool:
        """Whether commands reach the broker: through this replica's session,
        or for a follower in leader mode, the leader's, as it last said."""
        if self.settings.cluster.mode == "leader" and self.role == "follower":
            return self.registry.link_up
        return self.link.connected.is_set()

    def on_cluster_notice(self, notice: dict[str, Any]) -> None:
        """A notice from another replica (``cluster.py``)."""
        assert self.cluster is not None
        kind = notice.get("kind")
        if kind == "outbox":
            self._flush_wanted.set()
        elif kind == "hello":
            if self.cluster.leading and self.settings.cluster.mode == "leader":
                self.cluster.tell({"kind": "link", "up": self.link.connected.is_set()})
        elif kind == "link":
            # A follower in leader mode has no session: the leader's is what counts.
            if self.settings.cluster.mode == "leader" and not self.cluster.leading:
                self.registry.link_up = bool(notice.get("up"))
                self.bus.deliver(notice)
        else:
            self.bus.deliver(notice)

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
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a failed task must not stop the shutdown
                log.exception("background task %s had failed", task.get_name())
        await self.engine.dispose()
        event(log, "services_stopped")


async def build(settings: ServerSettings) -> Services:
    """Open and migrate the database and wire the parts together."""
    engine = db.create_engine(settings.database.url)
    await db.migrate(engine)
    sessions = db.sessions(engine)
    bus = Bus()
    trust = TrustWatch(settings.pki.dir)
    revocations = RevocationStore(settings.pki.dir / pki.REVOKED)
    registry = Registry(sessions, bus, settings.presence)
    holder: dict[str, Services] = {}

    async def on_message(topic: str, raw: bytes) -> None:
        await holder["services"].on_message(topic, raw)

    async def on_connect() -> None:
        await holder["services"].on_connect()

    mode = settings.cluster.mode
    if mode != "single" and engine.dialect.name != "postgresql":
        raise ConfigError(f"cluster.mode = {mode!r} needs PostgreSQL (database.url)")
    link = BrokerLink(settings.mqtt, on_message, on_connect,
                      subscriptions=(shared_subscriptions(settings.cluster.share_group)
                                     if mode == "shared" else SUBSCRIPTIONS),
                      clean_session=mode == "shared")
    outbox = Outbox(sessions, lambda: trust.signing_key, link)
    metrics = ServerMetrics(link=link.health, link_up=link.connected.is_set,
                            outbox=outbox.counts)
    config = SettingsStore(sessions, settings.notifications.min_offline_after,
                           settings.notifications.allowed_networks)
    agents = AgentAdmin(sessions, settings, revocations, bus)
    services = Services(
        settings=settings, engine=engine, sessions=sessions, bus=bus, link=link, outbox=outbox,
        registry=registry, wakeups=Wakeups(sessions, outbox, bus, settings.wakeups, metrics,
                                                registry=registry),
        tasks=Tasks(sessions), agents=agents,
        credentials=Credentials(sessions),
        agent_auth=AgentAuthenticator(sessions, trust.token_keys, revocations),
        config=config, revocations=revocations,
        wake_limiter=RateLimiter(settings.wakeups.per_minute, settings.wakeups.burst),
        sync_admission=SyncAdmission(max_concurrent=settings.sync.max_concurrent,
                                     max_queued=settings.sync.max_queued,
                                     queue_wait=settings.sync.queue_wait),
        wol=WolDispatch(sessions, outbox, bus, registry, config=config,
                        sweep_interval=settings.wakeups.sweep_interval,
                        allowed=allowed_networks(settings.wol.allowed_networks)),
        handled=HandledEvents(sessions), metrics=metrics,
        sync_budget=RateLimiter(settings.budgets.syncs_per_minute, settings.budgets.syncs_burst),
        trust=trust,
        gauges=GaugeReader(sessions, agents, stale_after=settings.presence.stale_after,
                           link_up=link.connected.is_set, ttl=GAUGE_TTL))
    if mode != "single":
        services.cluster = Cluster(engine, settings.cluster, services.on_cluster_notice)
        bus.relay = services.cluster.tell
    if mode == "leader":
        outbox.hand_off = services._hand_off
    services.campaigns = Campaigns(sessions, wakeups=services.wakeups, wol=services.wol,
                                   registry=registry, bus=bus, settings=settings.campaigns,
                                   max_ttl=settings.wakeups.max_ttl, counts=metrics.campaigns)
    services.keep_awake = KeepAwake(sessions, outbox, bus, registry, config)
    holder["services"] = services
    return services
