"""The agent: keep one route to the broker open, act on verified commands, sync.

One connection loop tries the planned routes in order, serves the first that
connects until it drops, then backs off with full jitter. Independently, an
interval loop syncs on schedule, so an agent whose push route is down still
syncs. Every state change is logged as one line and written to the state
directory for ``epns-agent status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import random
import socket
import ssl
import time
from dataclasses import dataclass, replace
from typing import Any

from agent_push.backoff import Backoff
from agent_push.dialer import open_route
from agent_push.keep_awake import KeepAwake
from agent_push.mqtt import Message, MqttLink
from agent_push.platform import awake_clock, interfaces
from agent_push.renewal import Renewed, Renewer
from agent_push.state import StateDir
from agent_push.sync import (
    HttpSync,
    RetrySchedule,
    SyncCoordinator,
    SyncOutcome,
    SyncRequest,
    TlsFiles,
    build_sync_action,
)
from agent_push.trust import AgentTrust
from agent_push.wol import relay
from epns import tls, topics
from epns.agent_config import AgentSettings
from epns.envelope import (
    Command,
    CommandType,
    Event,
    EventType,
    Presence,
    PresenceState,
    ReplayGuard,
    encode_event,
    encode_presence,
    verify_command,
)
from epns.errors import MessageError, RouteError, UnknownSigner
from epns.heartbeat import Heartbeat, network_key
from epns.logs import event
from epns.netwatch import CHECK_INTERVAL, Change, Look, Watch
from epns.routes import (
    PathFault,
    ProxyEndpoint,
    Route,
    RouteBook,
    SyncWay,
    fault_of,
    parse_proxy,
    plan_routes,
    sync_candidates,
)
from epns.tokens import PublicKey
from epns.trust import Trust, ca_switched
from epns.wol import parse_wol_body

log = logging.getLogger(__name__)

# Learnt ping intervals kept, one per route and network (epns.heartbeat).
MAX_NETWORKS = 32


@dataclass(frozen=True)
class AgentContext:
    """What the edge prepared from the settings: keys, the broker's TLS context,
    the files of the sync's (built by the HTTP exchange's child), token."""

    settings: AgentSettings
    command_key: PublicKey
    broker_tls: ssl.SSLContext
    # The same, for MQTT over WebSocket (ALPN http/1.1).
    websocket_tls: ssl.SSLContext
    sync_tls: TlsFiles
    token: str | None
    version: str


@dataclass
class Status:
    """The agent's view of itself, as ``epns-agent status`` prints it."""

    pid: int
    connected: bool = False
    route: str | None = None
    since: float | None = None
    last_wake: dict[str, Any] | None = None
    last_sync: dict[str, Any] | None = None
    next_retry: float | None = None
    last_error: str | None = None
    # Wall-clock time the broker was last heard from, and how long the agent
    # may go without hearing it before it gives the connection up.
    last_heard: float | None = None
    deaf_bound: float | None = None
    # The identity's expiry, the last renewal and when the next is due
    # (agent_push.renewal).
    identity: dict[str, Any] | None = None


class Agent:
    """The long-running agent; ``run`` returns when ``stop`` is set."""

    def __init__(self, context: AgentContext) -> None:
        self.context = context
        self.settings = context.settings
        self.agent_id = context.settings.identity.agent_id
        self.state = StateDir(context.settings.state_dir)
        self.status = Status(pid=os.getpid())
        self.replay = ReplayGuard()
        # The keys commands may come from: the pinned one, and what key
        # rotations announced since (epns.trust).
        self.trust = AgentTrust(context.settings.state_dir, context.command_key)
        # The fleet CAs it trusts for the broker and the server: its config's,
        # or what a CA rotation announced (state_dir/ca.pem).
        self.context = context = self._with_trusted_cas(context)
        self.backoff = Backoff(self.settings.reconnect.base, self.settings.reconnect.cap)
        self.link: MqttLink | None = None
        # Set to cut a reconnect wait short (the network changed).
        self._retry_now = asyncio.Event()
        # The learnt ping interval of the route in use, and its key.
        self._beat: tuple[str, Heartbeat] | None = None
        # The one route decision for push and sync (epns.routes).
        self.book = RouteBook()
        ways = _AgentSyncWays(self)
        self.renewer = self._renewer(ways)
        action = build_sync_action(self.settings.sync, self.agent_id, tls=context.sync_tls,
                                   token=context.token, ways=ways,
                                   timeouts=self.settings.timeouts, changes=self._changes,
                                   inventory=self._inventory,
                                   renew=None if self.renewer is None
                                   else self.renewer.request_now)
        self._http = action if isinstance(action, HttpSync) else None
        self.sync = SyncCoordinator(action, self._synced, retry=RetrySchedule(
            self.settings.sync.retry_base, self._sync_interval))
        # Set once a renewed identity is installed: the connection moves to it
        # at the next moment no command is being handled.
        self._switch = asyncio.Event()
        self._reconnect_now = False
        # The sleep hold the server may ask for (epns.keep_awake).
        self.keep_awake = KeepAwake(self.settings.wol.allow_keep_awake)

    def _renewer(self, ways: _AgentSyncWays) -> Renewer | None:
        """The identity's renewer: over the HTTP sync's channel, so an agent
        whose sync is a command or an entry point cannot renew (it says so)."""
        settings = self.settings
        if not settings.renewal.enabled:
            return None
        if settings.sync.action != "http" or not settings.sync.urls:
            event(log, "renewal_unavailable", logging.WARNING,
                  reason="renewal goes over the HTTP sync (sync.action = 'http', sync.url)",
                  action="the identity will expire unless renewed by hand")
            return None
        return Renewer(settings, ways, tls_ca=self.context.sync_tls.ca,
                       token=lambda: self.context.token, installed=self._renewed,
                       report=self._renewal_state)

    # -- the two loops -------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve and reconnect until ``stop``; sync on the interval meanwhile."""
        event(log, "starting", agent=self.agent_id, version=self.context.version,
              state_dir=str(self.settings.state_dir))
        self._publish_status()
        background = [asyncio.create_task(self._interval_loop()),
                      asyncio.create_task(self._watch_loop())]
        if self.renewer is not None:
            background.append(asyncio.create_task(self.renewer.run()))
        try:
            await self._connection_loop(stop)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.sync.close()
            await self.keep_awake.release()
            event(log, "stopped", agent=self.agent_id)

    async def _connection_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._connect_and_serve(stop)
            except Exception as exc:  # a bug must cost one connection, not the agent
                self.status.last_error = f"internal error: {exc!r}"
                log.exception("internal_error")
            if stop.is_set():
                return
            if self._reconnect_now:
                # Leaving for the renewed identity: straight back, no backoff.
                self._reconnect_now = False
                continue
            delay = self.backoff.next_delay()
            self.status.next_retry = time.time() + delay
            event(log, "reconnect_scheduled", delay=round(delay, 2), attempt=self.backoff.attempts)
            self._publish_status()
            self._retry_now.clear()
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._retry_now.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()

    async def _connect_and_serve(self, stop: asyncio.Event) -> None:
        connected = await self._connect_any(stop)
        if connected is None:
            return
        link, route = connected
        began = time.monotonic()
        await self._serve(link, route, stop)
        if time.monotonic() - began >= self.settings.reconnect.stable_after:
            self.backoff.reset()

    async def _watch_loop(self) -> None:
        """Look at the machine's addresses and clocks every CHECK_INTERVAL:
        after a change or a sleep, check the connection at once, or reconnect
        at once when there is none (``epns.netwatch``)."""
        watch = Watch(_look())
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            # getifaddrs(3) answers from the kernel at once: no thread needed,
            # and an idle agent pays one wake-up per look, not three.
            change = watch.look(_look())
            if change is Change.NONE:
                continue
            link = self.link
            event(log, "network_changed", change=change.value,
                  action="checking the connection now" if link is not None
                  else "reconnecting now")
            if link is not None:
                link.check_now()
            else:
                self.backoff.reset()
                self._retry_now.set()

    async def _interval_loop(self) -> None:
        while True:
            # A little jitter, so agents started together do not sync together forever.
            await asyncio.sleep(self._sync_interval() * random.uniform(0.9, 1.1))  # noqa: S311
            self.sync.request("interval")

    def _sync_interval(self) -> float:
        """The server's hint when it sent one, else ``sync.interval``."""
        return float(self.state.hints().get("sync_interval") or self.settings.sync.interval)

    # -- connecting ------------------------------------------------------------

    def _routes(self) -> list[Route]:
        broker = self.settings.broker
        return plan_routes(broker.host, broker.ports, proxy=self._proxy(),
                           no_proxy=self.settings.proxy.no_proxy,
                           websocket_url=broker.websocket_url, last_good=self.state.last_route(),
                           backup_hosts=broker.backup_hosts)

    def _proxy(self) -> ProxyEndpoint | None:
        proxy = self.settings.proxy
        if proxy.url is None:
            return None
        return parse_proxy(proxy.url, proxy.username, proxy.password)

    async def _connect_any(self, stop: asyncio.Event) -> tuple[MqttLink, Route] | None:
        proxy_failed = False
        for route in self.book.order(self._routes(), time.time()):
            if stop.is_set():
                return None
            if proxy_failed and route.proxy is not None:
                continue  # the proxy itself is down: do not pay its timeout twice
            try:
                link = await self._connect(route)
            except RouteError as exc:
                self.status.last_error = f"{route.name}: {exc}"
                event(log, "route_failed", logging.WARNING, route=route.name, step=exc.step,
                      reason=str(exc))
                proxy_failed |= self._learn(route, fault_of(exc), str(exc))
                continue
            if route.proxy is not None:
                self.book.proxy_worked()
            return link, route
        return None

    def _learn(self, route: Route, fault: PathFault | None, reason: str) -> bool:
        """Record what a failure on ``route`` (push or sync) says about the way
        out; True when the proxy itself failed."""
        if route.proxy is None or fault is None or fault is PathFault.UNREACHABLE:
            return False
        self.book.failed(fault, port=route.port, now=time.time())
        if fault is PathFault.PROXY_PORT:
            event(log, "proxy_port_refused", logging.WARNING, port=route.port, reason=reason,
                  action="trying the proxy's other ports")
            return False
        event(log, "proxy_failed", logging.WARNING, fault=fault.value, reason=reason,
              action="falling back to direct routes, for push and sync")
        return True

    async def _connect(self, route: Route) -> MqttLink:
        timeouts = self.settings.timeouts
        event(log, "route_trying", route=route.name, host=route.host, port=route.port)
        context = (self.context.websocket_tls if route.transport == "wss"
                   else self.context.broker_tls)
        sock = await asyncio.to_thread(open_route, route, context, timeouts)
        credentials = (self.agent_id, self.context.token) if self.context.token else None
        will = encode_presence(Presence(PresenceState.OFFLINE, at=time.time()))
        keepalive = self._keepalive(route)
        heartbeat = self._heartbeat(route, keepalive)
        link = MqttLink(self.agent_id, keepalive=keepalive,
                        will=(topics.agent_presence(self.agent_id), will),
                        credentials=credentials,
                        websocket_path=route.path if route.transport == "wss" else None,
                        on_alive=self._heard,
                        ping_interval=heartbeat.interval if heartbeat else None)
        try:
            await link.connect(sock, route.host, route.port, timeouts.connack)
        except BaseException:
            sock.close()
            raise
        return link

    def _heartbeat(self, route: Route, keepalive: int) -> Heartbeat | None:
        """The learnt ping interval of ``route`` on this network (None when
        learning is off); it becomes the current one."""
        settings = self.settings.keepalive
        if not settings.learn:
            self._beat = None
            return None
        key = network_key(route.name, _addresses())
        record = self.state.heartbeats().get(key)
        beat = (Heartbeat.start(settings.learn_start, keepalive) if record is None
                else Heartbeat.from_dict(record, settings.learn_start, keepalive))
        self._beat = (key, beat.within(keepalive, time.time()))
        return beat

    def _save_heartbeat(self) -> None:
        if self._beat is None:
            return
        key, beat = self._beat
        records = self.state.heartbeats()
        records.pop(key, None)
        records[key] = beat.to_dict()  # the newest last
        # Addresses come and go (temporary IPv6, containers): keep the newest.
        self.state.save_heartbeats(dict(list(records.items())[-MAX_NETWORKS:]))

    def _keepalive(self, route: Route) -> int:
        hinted = self.state.hints().get("keepalive") or {}
        configured: int = getattr(self.settings.keepalive, route.kind)
        value = hinted.get(route.kind) if isinstance(hinted, dict) else None
        return int(value) if isinstance(value, int) and 5 <= value <= 65535 else configured

    # -- serving one connection ---------------------------------------------------

    async def _serve(self, link: MqttLink, route: Route, stop: asyncio.Event) -> None:
        self.link = link
        try:
            await self._on_connected(link, route)
        except (ConnectionError, TimeoutError) as exc:
            event(log, "disconnected", logging.WARNING, route=route.name,
                  reason=f"lost while starting the session: {exc}")
            await link.close()
            self._on_disconnected(str(exc))
            return
        stopping = asyncio.create_task(stop.wait())
        try:
            reason = await self._pump(link, stopping)
        finally:
            stopping.cancel()
        if stop.is_set():
            await self._say_goodbye(link)
            reason = "agent stopping"
        elif self._switch.is_set():
            reason = await self._leave_for_new_identity(link)
        else:
            await link.close()
        event(log, "disconnected",
              logging.INFO if stop.is_set() or self._reconnect_now else logging.WARNING,
              route=route.name, reason=reason)
        self._on_disconnected(reason, link)

    async def _on_connected(self, link: MqttLink, route: Route) -> None:
        wanted = self._command_filters()
        granted = await link.subscribe(wanted)
        refused = [f for f, code in zip(wanted, granted, strict=True) if code >= 0x80]
        if refused:
            event(log, "subscribe_refused", logging.ERROR, filters=",".join(refused),
                  hint="the broker's ACL does not match this agent's identity or groups")
        if topics.agent_cmd(self.agent_id) in refused:
            # Connected but deaf to its own commands: no wake-up would ever
            # arrive. A refusal may pass (a NATS node refuses while JetStream
            # re-elects, an ACL is being reloaded), so leave and come back
            # with backoff, as after any failed connection.
            raise ConnectionError("the broker refused the subscription to this agent's "
                                  "commands")
        birth = Presence(PresenceState.ONLINE, at=time.time(), route=route.name,
                         version=self.context.version, hostname=socket.gethostname(),
                         interfaces=interfaces(),
                         keep_awake=self.settings.wol.allow_keep_awake)
        await link.publish(topics.agent_presence(self.agent_id), encode_presence(birth),
                           retain=True)
        self.state.remember_route(route.name)
        self.book.connected = route
        self.status = replace(self.status, connected=True, route=route.name, since=time.time(),
                              next_retry=None, last_heard=time.time(),
                              deaf_bound=link.liveness.deaf_bound)
        event(log, "connected", route=route.name, keepalive=link.keepalive)
        self._publish_status()
        self.sync.request("connect")

    def _command_filters(self) -> list[str]:
        groups = [topics.group_cmd(g) for g in self.settings.identity.groups]
        return [topics.agent_cmd(self.agent_id), topics.ALL_CMD, *groups]

    async def _pump(self, link: MqttLink, stopping: asyncio.Task[bool]) -> str:
        """Handle messages until the link closes, the agent stops, or a
        renewed identity is waiting (between two messages)."""
        switching = asyncio.create_task(self._switch.wait())
        try:
            while True:
                getting = asyncio.create_task(link.messages.get())
                waiting: list[asyncio.Future[Any]] = [getting, stopping, link.closed,
                                                      switching]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    if link.closed.done():
                        return link.closed.result()
                    return "agent stopping" if stopping in done else "identity renewed"
                await self._handle(link, getting.result())
        finally:
            switching.cancel()

    async def _leave_for_new_identity(self, link: MqttLink) -> str:
        """Close the connection cleanly (DISCONNECT: no last will, so the
        server sees no offline flap) and reconnect at once on the renewed
        identity. The session is persistent: commands published meanwhile
        wait at the broker. Those paho acknowledged but the agent had not
        handled yet are handled now: a wake-up's sync still runs, so it is
        satisfied though its ack could not be sent."""
        self._switch.clear()
        await link.close(graceful=True)
        while not link.messages.empty():
            await self._handle(link, link.messages.get_nowait())
        self._reconnect_now = True
        return "moving to the renewed identity"

    def _with_trusted_cas(self, context: AgentContext) -> AgentContext:
        """``context`` with TLS contexts that trust ``self.trust``'s CAs (the
        sync's too, unless it has a CA of its own). Connections made already
        keep theirs: a CA rotation moves no connection."""
        broker, ident = self.settings.broker, self.settings.identity
        # Without broker.ca, the system's CAs: no fleet CA to rotate.
        path = None if broker.ca is None else self.trust.write_cas(broker.ca)
        sync_tls = context.sync_tls
        if path is not None and sync_tls.ca in (None, broker.ca):
            sync_tls = replace(sync_tls, ca=path)
        return replace(
            context, sync_tls=sync_tls,
            broker_tls=tls.client_context(path, ident.cert, ident.key, alpn=tls.MQTT_ALPN),
            websocket_tls=tls.client_context(path, ident.cert, ident.key,
                                             alpn=tls.WEBSOCKET_ALPN))

    def _trust_changed(self, before: Trust | None) -> None:
        """After an announcement changed the trust: new CAs for the next
        connections; after a CA switch, a certificate renewed from the new CA."""
        if before is None:
            return
        if before.cas != self.trust.trust.cas:
            self.context = self._with_trusted_cas(self.context)
        if (ca_switched(before, self.trust.trust) and self.renewer is not None
                and self.settings.identity.cert is not None):
            event(log, "renewal_requested", reason="the fleet CA switched")
            self.renewer.request_now()
        self._publish_status()

    def _renewed(self, renewed: Renewed) -> None:
        """The renewed identity's files are in place: new connections use it."""
        if renewed.token is not None:
            self.context = replace(self.context, token=renewed.token)
            if self._http is not None:
                self._http.use_token(renewed.token)
        else:
            # The same files, new contents: contexts that load them again.
            self.context = self._with_trusted_cas(self.context)
        if self.link is not None:
            event(log, "identity_switching", action="reconnecting on the renewed identity")
            self._switch.set()

    def _renewal_state(self, state: dict[str, Any]) -> None:
        self.status.identity = state
        self._publish_status()

    async def _say_goodbye(self, link: MqttLink) -> None:
        offline = encode_presence(Presence(PresenceState.OFFLINE, at=time.time()))
        with contextlib.suppress(ConnectionError, TimeoutError):
            await link.publish(topics.agent_presence(self.agent_id), offline, retain=True,
                               timeout=2)
        await link.close(graceful=True)

    def _heard(self, idle: float) -> None:
        """A ping after ``idle`` silent seconds was answered: the path is
        alive; say so in the status, and learn from it."""
        self.status.last_heard = time.time()
        self._publish_status()
        link = self.link
        if self._beat is None or link is None:
            return
        beat = self._beat[1]
        if beat.answered(idle):
            link.set_ping_interval(beat.interval)
            self.status.deaf_bound = link.liveness.deaf_bound
            event(log, "heartbeat_raised", interval=round(beat.interval),
                  answered_after=round(idle), ceiling=round(beat.ceiling))
            self._save_heartbeat()

    def _on_disconnected(self, reason: str, link: MqttLink | None = None) -> None:
        if link is not None and link.lost_idle is not None and self._beat is not None:
            # The path forgot the flow after about this long: ping sooner.
            beat = self._beat[1]
            beat.lost(link.lost_idle, time.time())
            event(log, "heartbeat_lowered", interval=round(beat.interval),
                  silent_for=round(link.lost_idle),
                  reason="the path forgot an idle connection")
            self._save_heartbeat()
        self.link = None
        self.book.connected = None
        # Leaving for a renewed identity is no error.
        error = self.status.last_error if self._reconnect_now else f"disconnected: {reason}"
        self.status = replace(self.status, connected=False, since=time.time(),
                              last_error=error)
        self._publish_status()

    # -- commands ------------------------------------------------------------------

    async def _handle(self, link: MqttLink, message: Message) -> None:
        try:
            command = verify_command(
                message.payload, self.trust.lookup(), agent_id=self.agent_id,
                groups=frozenset(self.settings.identity.groups), replay=self.replay,
                now=time.time())
        except MessageError as exc:
            if isinstance(exc, UnknownSigner):
                self.trust.refused(exc)
                self._publish_status()
            event(log, "command_rejected", logging.WARNING, topic=message.topic,
                  kind=type(exc).__name__, reason=str(exc))
            return
        event(log, "command_accepted", id=command.id, type=command.type.value,
              target=command.target)
        await self._report(link, Event(EventType.ACK, time.time(), command.id,
                                       {"type": command.type.value}))
        await self._dispatch(link, command)

    async def _dispatch(self, link: MqttLink, command: Command) -> None:
        if command.type is CommandType.WAKE:
            self.status.last_wake = {"at": time.time(), "id": command.id,
                                     "result": "sync requested"}
            self._publish_status()
            self.sync.request("wake", command_id=command.id)
        elif command.type is CommandType.WOL:
            await self._relay_wol(link, command)
        elif command.type is CommandType.CONFIG:
            self._apply_hints(command.body)
        elif command.type is CommandType.PING:
            await self._report(link, Event(EventType.PONG, time.time(), command.id))
        elif command.type is CommandType.TRUST:
            self._trust_changed(self.trust.accept(command.body.get("announcement"), "command"))
        elif command.type is CommandType.KEEP_AWAKE:
            await self._keep_awake(link, command)

    async def _keep_awake(self, link: MqttLink, command: Command) -> None:
        """Hold off sleep or release, as the server elected; report the outcome."""
        subnets = command.body.get("subnets")
        held = await self.keep_awake.apply(
            command.body.get("hold") is True,
            [str(s) for s in subnets] if isinstance(subnets, list) else [])
        await self._report(link, Event(EventType.KEEP_AWAKE, time.time(), command.id,
                                       {"holding": held.holding, "detail": held.detail}))
        self._publish_status()

    async def _relay_wol(self, link: MqttLink, command: Command) -> None:
        try:
            plan = parse_wol_body(command.body, self.settings.wol)
        except MessageError as exc:
            event(log, "wol_rejected", logging.WARNING, id=command.id, reason=str(exc))
            await self._report(link, Event(EventType.WOL_RESULT, time.time(), command.id,
                                           {"ok": False, "targets": [], "errors": [str(exc)]}))
            return
        result = await relay(plan, self.settings.wol)
        event(log, "wol_relayed", id=command.id, ok=result.get("ok"))
        await self._report(link, Event(EventType.WOL_RESULT, time.time(), command.id, result))

    async def _report(self, link: MqttLink, report: Event) -> None:
        try:
            await link.publish(topics.agent_evt(self.agent_id), encode_event(report))
        except (ConnectionError, TimeoutError) as exc:
            event(log, "report_failed", logging.WARNING, type=report.type.value,
                  ref=report.ref, reason=str(exc) or type(exc).__name__)

    def _apply_hints(self, hints: Any) -> None:
        """Keep-alive (by route kind) and sync-interval hints from the server;
        they apply from the next connection and the next interval."""
        if not isinstance(hints, dict):
            return
        current = self.state.hints()
        updated = dict(current)
        keepalive = hints.get("keepalive")
        if isinstance(keepalive, dict):
            valid = {str(k): v for k, v in keepalive.items()
                     if isinstance(v, int) and 5 <= v <= 65535}
            known = current.get("keepalive")
            if valid:  # a hint for one route kind keeps the others
                updated["keepalive"] = {**(known if isinstance(known, dict) else {}), **valid}
        interval = hints.get("sync_interval")
        if isinstance(interval, int | float) and interval >= 30:
            updated["sync_interval"] = float(interval)
        if updated == current:
            return  # nothing new: most sync replies carry no hints
        self.state.save_hints(updated)
        event(log, "hints_applied", keepalive=updated.get("keepalive"),
              sync_interval=updated.get("sync_interval"))

    # -- sync ------------------------------------------------------------------------

    def _changes(self) -> dict[str, Any]:
        """What the agent reports at each sync: who and where it is."""
        return {
            "hostname": socket.gethostname(),
            "version": self.context.version,
            "route": self.status.route,
            "connected": self.status.connected,
            "addresses": [f"{i.address}/{i.prefix}" for i in interfaces()],
        }

    def _inventory(self) -> dict[str, Any]:
        """The full inventory an ``inventory`` task asks for."""
        return {**self._changes(), "os": platform.platform(), "python": platform.python_version(),
                "interfaces": [{"address": i.address, "prefix": i.prefix, "mac": i.mac}
                               for i in interfaces()]}

    async def _synced(self, request: SyncRequest, outcome: SyncOutcome) -> None:
        # "wakes" (here, in the status file, and in the sync event's body) keeps its
        # old name for compatibility with what reads them: it holds command ids.
        summary = {"at": time.time(), "reason": request.reason, "ok": outcome.ok,
                   "detail": outcome.detail, "wakes": list(request.command_ids)}
        self.status.last_sync = summary
        if request.command_ids and self.status.last_wake is not None:
            self.status.last_wake["result"] = "synced" if outcome.ok else outcome.detail
        if outcome.reply is not None:
            self._apply_hints({"keepalive": dict(outcome.reply.keepalive),
                               "sync_interval": outcome.reply.sync_interval})
            if outcome.reply.trust is not None:
                self._trust_changed(self.trust.accept(outcome.reply.trust, "sync reply"))
        self._publish_status()
        link = self.link
        if link is not None:
            await self._report(link, Event(EventType.SYNC, time.time(), None, {
                "sync_id": request.sync_id, "started_at": request.started_at,
                "reason": request.reason, "wakes": list(request.command_ids), "ok": outcome.ok,
                "detail": outcome.detail}))

    def _publish_status(self) -> None:
        status = self.status
        self.state.write_status({
            "pid": status.pid, "agent_id": self.agent_id, "connected": status.connected,
            "route": status.route, "since": status.since, "last_wake": status.last_wake,
            "last_sync": status.last_sync, "next_retry": status.next_retry,
            "last_error": status.last_error, "last_heard": status.last_heard,
            "trust": self.trust.status(),
            "deaf_bound": status.deaf_bound, "identity": status.identity,
            "keep_awake": {"allowed": self.settings.wol.allow_keep_awake,
                           "holding": self.keep_awake.state.holding,
                           "detail": self.keep_awake.state.detail},
            "written_at": time.time(),
        })


def _addresses() -> frozenset[str]:
    """The machine's addresses now."""
    return frozenset(i.address for i in interfaces())


def _look() -> Look:
    """The machine now, for ``epns.netwatch``: its addresses and both clocks
    (the second one stands still while the machine sleeps)."""
    return Look(_addresses(), time.time(), awake_clock())


class _AgentSyncWays:
    """The sync's ways, decided by the agent's ``RouteBook``: the way MQTT
    goes now first, across every sync URL. What the sync learns about the
    proxy goes into the same book, so the next MQTT connection pass knows it
    too."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        settings = agent.settings
        self._candidates = sync_candidates(settings.sync.urls, agent._proxy(),
                                           settings.proxy.no_proxy)

    def ways(self) -> list[SyncWay]:
        """The candidates in the order the book decides."""
        agent = self._agent
        return agent.book.sync_ways(self._candidates, last_good=agent.state.last_route(),
                                    now=time.time())

    def failed(self, way: SyncWay, fault: PathFault, reason: str) -> None:
        """Tell the book what the way showed; log what the sync does next."""
        self._agent.book.sync_failed(way)
        if way.proxy is None:
            return
        self._agent._learn(Route("mqtts", "sync", way.port, way.proxy), fault, reason)

    def worked(self, way: SyncWay) -> None:
        """The next sync goes this way first; through the proxy, it is up."""
        self._agent.book.sync_good = way
        if way.proxy is not None:
            self._agent.book.proxy_worked()
