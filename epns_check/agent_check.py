"""The agent side of epns-check: steps 1 to 10 against one agent's settings.

Routes are tried in the agent's own order (``epns.routes.plan_routes``, the
last route that worked first). MQTT runs once, on the first route whose TLS
verifies: TLS checked end to end carries the bytes inside unchanged, so the
broker's answer to this identity is the same on every such route. That
connection stays open for the end-to-end test.

Connecting with the agent's identity takes over a running agent's session
(the client id is the agent id). The session is resumed, not cleaned, and
commands queued for the agent are left unacknowledged, so the broker
delivers them to the agent when it reconnects, which it does by itself.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from dataclasses import dataclass

import httpx

from epns import topics
from epns.agent_config import AgentSettings
from epns.envelope import Event, EventType, decode_command, encode_event, target_agent
from epns.errors import EPNSError, MessageError, ProtocolViolation, UnknownSigner
from epns.mqtt import (
    Connack,
    Connect,
    Puback,
    Suback,
    Subscribe,
    encode,
    puback_bytes,
    publish_bytes,
)
from epns.routes import (
    PathFault,
    ProxyEndpoint,
    Route,
    RouteBook,
    SyncWay,
    parse_proxy,
    plan_routes,
    sync_candidates,
)
from epns_check import diagnose, probes
from epns_check.material import Material, load, with_trusted_cas
from epns_check.report import Finding, Report, Result, Status, Step, decide, skipped
from epns_check.server_api import ServerClient, root_cause

TAKEOVER_NOTE = ("epns-check connects with the agent's identity: a running agent with this "
                 "id is disconnected, and reconnects by itself; commands queued for it stay "
                 "queued for it (--no-takeover stops after TLS)")
NO_TAKEOVER = ("--no-takeover: MQTT, the ACL and the end-to-end command were not tested, so "
               "a running agent keeps its session; `epns-agent status` tells whether its own "
               "connection answers")
KEEPALIVE = 300
ROUTE_FILE = "route"


def agent_connect(agent_id: str, token: str | None) -> Connect:
    """The CONNECT the agent sends, without a will: the token (if any) as
    password under the agent id. Clean session stays off: a clean session
    would delete the agent's own, with the commands queued for it."""
    return Connect(agent_id, KEEPALIVE, clean_session=False,
                   username=agent_id if token else None,
                   password=None if token is None else token.encode())


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """What the command line adds to the agent's settings."""

    route: str | None = None
    server_url: str | None = None
    api_token: str | None = None
    push_timeout: float = 10.0
    # Stop after TLS: no MQTT CONNECT with the agent's identity, which would
    # take a running agent's session over.
    no_takeover: bool = False


class AgentCheck:
    """One run of the agent-side steps."""

    def __init__(self, settings: AgentSettings, options: CheckOptions, source: str) -> None:
        # The CAs the agent trusts now: a CA rotation's, if it followed one.
        settings = with_trusted_cas(settings)
        self.settings = settings
        self.options = options
        self.source = source
        self.results: list[Result] = []
        self.material = Material()
        self.proxy = (parse_proxy(settings.proxy.url, settings.proxy.username,
                                  settings.proxy.password) if settings.proxy.url else None)
        self.last_good = _last_route(settings)
        self._proxy_down = False
        # What the push steps learnt, for the sync's way (``_sync_ways``).
        self._refused_ports: set[int] = set()
        self._working: Route | None = None

    # --- bookkeeping -------------------------------------------------------------

    def _add(self, step: Step, subject: str, finding: Finding, started: float,
             route: Route | None = None) -> Finding:
        self.results.append(Result(step, subject, finding, time.monotonic() - started,
                                   route.name if route else None))
        return finding

    def _plan(self) -> list[Route]:
        """The agent's routes in its planned order: the first is the primary."""
        broker, proxy = self.settings.broker, self.settings.proxy
        return plan_routes(broker.host, broker.ports, proxy=self.proxy,
                           no_proxy=proxy.no_proxy, websocket_url=broker.websocket_url,
                           backup_hosts=broker.backup_hosts)

    def routes(self) -> list[Route]:
        """The routes to test: the agent's order (the last route that worked
        first, as the agent tries them), or only the one --route names."""
        planned = self._plan()
        if self.options.route is not None:
            return [r for r in planned if r.name == self.options.route]
        return sorted(planned, key=lambda r: r.name != self.last_good)

    # --- the run -----------------------------------------------------------------

    def run(self) -> Report:
        """Every step; the report with its verdict."""
        self.material, config = load(self.settings, self.source)
        self.results += config
        routes = self.routes()
        self._dns()
        session: probes.MqttSession | None = None
        tried_mqtt = self.options.no_takeover
        for route in routes:
            stream = self._tls(route)
            if stream is None:
                continue
            if tried_mqtt:
                stream.close()
                continue
            tried_mqtt = True
            session = self._mqtt(route, stream)
        try:
            if self.options.no_takeover:
                self._add(Step.MQTT, "all routes", skipped(NO_TAKEOVER), time.monotonic())
            else:
                self._end_to_end(session)
        finally:
            if session is not None:
                session.close()
        self._server_steps()
        order = routes if self.options.route else self._plan()
        verdict = decide(self.results, [r.name for r in order], last_good=self.last_good,
                         mqtt_tested=not self.options.no_takeover)
        note = NO_TAKEOVER if self.options.no_takeover else TAKEOVER_NOTE
        return Report(f"epns-check: agent {self.settings.identity.agent_id} -> "
                      f"{self.settings.broker.host}", tuple(self.results), verdict, (note,))

    # --- step 2: DNS ---------------------------------------------------------------

    def _dns(self) -> None:
        host = self.settings.broker.host
        started = time.monotonic()
        try:
            addresses = probes.resolve(host)
        except OSError as exc:
            proxy = None if self.proxy is None else f"{self.proxy.host}:{self.proxy.port}"
            self._add(Step.DNS, host, diagnose.unresolved(host, exc, proxy=proxy), started)
            return
        self._add(Step.DNS, host, diagnose.resolved(host, addresses), started)

    # --- steps 3 and 4: TCP, direct or through the proxy ------------------------------

    def _open(self, route: Route, *, record: bool = True) -> socket.socket | None:
        """A connected socket for ``route`` (a tunnel through its proxy)."""
        if route.proxy is None:
            return self._direct(route, record)
        return self._tunnel(route, route.proxy, record)

    def _direct(self, route: Route, record: bool) -> socket.socket | None:
        timeout = self.settings.timeouts.tcp_connect
        started = time.monotonic()
        try:
            sock = probes.tcp(route.host, route.port, timeout)
        except OSError as exc:
            if record:
                self._add(Step.TCP, route.name,
                          diagnose.tcp_failure(exc, route.host, route.port, timeout),
                          started, route)
            return None
        if record:
            address = str(sock.getpeername()[0])
            self._add(Step.TCP, route.name, diagnose.tcp_connected(address, route.port),
                      started, route)
        return sock

    def _tunnel(self, route: Route, proxy: ProxyEndpoint, record: bool) -> socket.socket | None:
        timeout = self.settings.timeouts.proxy_connect
        where = f"{proxy.host}:{proxy.port}"
        if self._proxy_down:
            if record:
                self._add(Step.PROXY, route.name, skipped(f"proxy {where} is unreachable"),
                          time.monotonic(), route)
            return None
        started = time.monotonic()
        try:
            sock = probes.tcp(proxy.host, proxy.port, timeout)
        except OSError as exc:
            self._proxy_down = True
            if record:
                self._add(Step.PROXY, f"proxy {where}",
                          diagnose.proxy_unreachable(exc, where, timeout), started)
            return None
        target = f"{route.host}:{route.port}"
        try:
            reply = probes.proxy_connect(sock, proxy, route.host, route.port, timeout)
        except (OSError, EOFError, ValueError) as exc:
            sock.close()
            if record:
                self._add(Step.PROXY, route.name, diagnose.proxy_silent(
                    exc, target=target, proxy=where, timeout=timeout), started, route)
            return None
        finding = diagnose.proxy_answer(reply.status, reply.reason, target=target, proxy=where,
                                        credentials=proxy.username is not None)
        if reply.status == 403:
            self._refused_ports.add(route.port)
        if record:
            self._add(Step.PROXY, route.name, finding, started, route)
        if finding.status is not Status.PASS:
            sock.close()
            return None
        return sock

    # --- step 5: TLS ---------------------------------------------------------------

    def _tls(self, route: Route) -> probes.Stream | None:
        context = (self.material.websocket_context if route.transport == "wss"
                   else self.material.broker_context)
        raw = self._open(route)
        if raw is None:
            return None
        started = time.monotonic()
        if context is None:
            raw.close()
            self._add(Step.TLS, route.name, skipped("no usable TLS settings (step 1)"),
                      started, route)
            return None
        timeout = self.settings.timeouts.tls_handshake
        try:
            sock = probes.handshake(raw, context, route.host, timeout)
        except ssl.SSLCertVerificationError as exc:
            self._add(Step.TLS, route.name, self._rejected(route, exc), started, route)
            return None
        except OSError as exc:
            proxy = None if route.proxy is None else f"{route.proxy.host}:{route.proxy.port}"
            self._add(Step.TLS, route.name, diagnose.tls_failure(
                exc, host=route.host, port=route.port, timeout=timeout, proxy=proxy),
                started, route)
            return None
        der = sock.getpeercert(binary_form=True)
        assert der is not None  # a verified handshake has a peer certificate
        cert = probes.certificate_facts(der, self.material.fleet_cas)
        cipher = sock.cipher()
        finding = diagnose.tls_ok(sock.version() or "TLS", cipher[0] if cipher else "?", cert,
                                  host=route.host, now=probes.utc_now())
        self._add(Step.TLS, route.name, finding, started, route)
        if self._working is None:
            self._working = route
        if route.transport == "wss":
            return self._upgrade(route, sock)
        return sock

    def _upgrade(self, route: Route, sock: ssl.SSLSocket) -> probes.Stream | None:
        """MQTT over secure WebSocket: the HTTP upgrade, reported with TLS."""
        timeout = self.settings.timeouts.tls_handshake
        where = probes.authority(route.host, route.port)
        url = f"wss://{where}{route.path}"
        subject = f"{route.name} upgrade"
        started = time.monotonic()
        try:
            answer, proven = probes.websocket_upgrade(sock, where, route.path, timeout)
        except (OSError, EOFError, ValueError) as exc:
            sock.close()
            self._add(Step.TLS, subject, diagnose.websocket_silent(exc, url, timeout), started,
                      route)
            return None
        finding = diagnose.websocket_answer(answer.status, answer.reason, proven=proven,
                                            protocol=answer.protocol, url=url)
        self._add(Step.TLS, subject, finding, started, route)
        if finding.status is not Status.PASS:
            sock.close()
            return None
        return probes.WebSocketStream(sock)

    def _rejected(self, route: Route, exc: ssl.SSLCertVerificationError) -> Finding:
        """Why the certificate did not verify, from what the peer presents to a
        second handshake that verifies nothing."""
        def reopen() -> socket.socket:
            raw = self._open(route, record=False)
            if raw is None:
                raise ConnectionError("the route did not open a second time")
            return raw

        cert = probes.presented_certificate(reopen, route.host,
                                            self.settings.timeouts.tls_handshake,
                                            self.material.fleet_cas)
        return diagnose.tls_rejected(cert, fleet_ca=self.material.fleet_ca_name,
                                     ca_file=str(self.settings.broker.ca), host=route.host,
                                     port=route.port, reason=str(exc.verify_message),
                                     now=probes.utc_now())

    # --- steps 6 and 7: MQTT CONNECT and the ACL --------------------------------------

    def _mqtt(self, route: Route, sock: probes.Stream) -> probes.MqttSession | None:
        session = probes.MqttSession(sock)
        if self._connect(route, session) and self._acl(route, session):
            return session
        session.close()
        return None

    def _connect(self, route: Route, session: probes.MqttSession) -> bool:
        agent_id = self.settings.identity.agent_id
        token = self.material.token
        timeout = self.settings.timeouts.connack
        started = time.monotonic()
        try:
            session.send(encode(agent_connect(agent_id, token)))
            code = session.expect(Connack, timeout).return_code
        except (OSError, EOFError, EPNSError) as exc:
            self._add(Step.MQTT, route.name, diagnose.mqtt_failure(
                exc, waited_for="CONNACK", timeout=timeout,
                foreign_issuer=self.material.foreign_issuer), started, route)
            return False
        finding = diagnose.connack(code, agent_id=agent_id,
                                   method="token" if token else "certificate",
                                   certificate_name=self.material.certificate_name)
        self._add(Step.MQTT, route.name, finding, started, route)
        return code == 0

    def _acl(self, route: Route, session: probes.MqttSession) -> bool:
        agent_id = self.settings.identity.agent_id
        timeout = self.settings.timeouts.connack
        cmd = topics.agent_cmd(agent_id)
        started = time.monotonic()
        try:
            session.send(encode(Subscribe(session.next_id(), ((cmd, 1),))))
            codes = session.expect(Suback, timeout).return_codes
        except (OSError, EOFError, EPNSError) as exc:
            self._add(Step.ACL, cmd, diagnose.subscribe_lost(exc, cmd, timeout), started, route)
            return False
        if self._add(Step.ACL, cmd, diagnose.subscribed(codes[0], cmd, agent_id), started,
                     route).status is Status.FAIL:
            return False
        evt = topics.agent_evt(agent_id)
        started = time.monotonic()
        event = encode_event(Event(EventType.PONG, time.time(), None, {"from": "epns-check"}))
        packet_id = session.next_id()
        try:
            session.send(publish_bytes(evt, event, 1, packet_id))
            acked = session.expect(Puback, timeout).packet_id
            if acked != packet_id:
                raise ProtocolViolation(f"PUBACK for packet {acked}, sent {packet_id}")
        except (OSError, EOFError, EPNSError) as exc:
            self._add(Step.ACL, evt, diagnose.publish_lost(exc, evt, timeout), started, route)
            return False
        self._add(Step.ACL, evt, diagnose.published(evt), started, route)
        return True

    # --- step 8: end to end ----------------------------------------------------------

    def _end_to_end(self, session: probes.MqttSession | None) -> None:
        started = time.monotonic()
        ways = self._sync_ways(self._server_urls())
        way = ways[0] if ways else None
        if session is None:
            self._add(Step.E2E, "test command", skipped("no route reaches the broker"), started)
            return
        if way is None or not self.options.api_token:
            self._add(Step.E2E, "test command", skipped(
                "give --api-token (or EPNS_API_TOKEN) and the server's URL (sync.url or "
                "--server-url) to have the server send a test command"), started)
            return
        finding = self._ping(session, way, self.options.api_token, started)
        self._add(Step.E2E, way.url, finding, started)

    def _ping(self, session: probes.MqttSession, way: SyncWay, api_token: str,
              started: float) -> Finding:
        agent_id = self.settings.identity.agent_id
        server = way.url
        client = self._client(way)
        if client is None:
            return skipped("no usable TLS settings (step 1)")
        try:
            answer = client.ping(agent_id, api_token)
        except httpx.HTTPError as exc:
            return diagnose.server_unreachable(root_cause(exc), server)
        finally:
            client.close()
        if answer.status != 200:
            return diagnose.api_refused(answer.status, answer.code, answer.message,
                                        agent_id=agent_id)
        return self._await_command(session, str(answer.data.get("command_id")), started)

    def _await_command(self, session: probes.MqttSession, command_id: str,
                       started: float) -> Finding:
        timeout = self.options.push_timeout
        deadline = started + timeout
        key_file = str(self.settings.broker.server_public_key)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = session.next_publish(remaining)
            except TimeoutError:
                break
            except (OSError, EOFError, EPNSError) as exc:
                return diagnose.mqtt_failure(exc, waited_for="test command", timeout=timeout)
            if _command_id(message.payload) != command_id:
                continue  # queued for the agent: left unacknowledged, so it gets them
            arrived = time.monotonic() - started
            if message.packet_id is not None:
                # The command is here either way; unacknowledged, the broker
                # would only re-send the ping to the agent, which answers it.
                with contextlib.suppress(OSError):
                    session.send(puback_bytes(message.packet_id))
            return self._verify(message.payload, command_id, arrived, key_file)
        return diagnose.push_lost(command_id, timeout)

    def _verify(self, payload: bytes, command_id: str, arrived: float, key_file: str) -> Finding:
        assert self.material.command_key is not None  # step 1 passed
        trust = self.material.trust
        try:
            command = decode_command(payload, self.material.command_key if trust is None
                                     else trust.lookup(time.time()))
        except UnknownSigner as exc:
            return diagnose.push_unknown_signer(command_id, key_file, str(exc))
        except MessageError as exc:
            return diagnose.push_forged(command_id, key_file, str(exc))
        agent_id = self.settings.identity.agent_id
        if command.target != target_agent(agent_id):
            return diagnose.push_forged(command_id, key_file, f"is for {command.target}")
        return diagnose.push_arrived(command_id, arrived, key_file)

    # --- steps 9 and 10: the sync endpoint and the clock -------------------------------

    def _server_urls(self) -> list[str]:
        sync = self.settings.sync
        if self.options.server_url:
            return [self.options.server_url]
        return sync.urls if sync.action == "http" else []

    def _sync_ways(self, urls: list[str]) -> list[SyncWay]:
        """The ways the agent's sync would try, in its order: the route
        decision the agent makes (``RouteBook``), fed what this check saw of
        the proxy and of the route push works on."""
        now = time.time()
        book = RouteBook(connected=self._working)
        for port in self._refused_ports:
            book.failed(PathFault.PROXY_PORT, port=port, now=now)
        if self._proxy_down:
            book.failed(PathFault.PROXY_DEAD, port=0, now=now)
        candidates = sync_candidates(urls, self.proxy, self.settings.proxy.no_proxy)
        return book.sync_ways(candidates, last_good=self.last_good, now=now)

    def _client(self, way: SyncWay) -> ServerClient | None:
        context = self.material.sync_context
        if context is None:
            return None
        proxy = None if way.proxy is None else way.proxy.url()
        return ServerClient(way.url, context, timeout=self.settings.sync.timeout, proxy=proxy)

    def _server_steps(self) -> None:
        started = time.monotonic()
        urls = self._server_urls()
        if not urls:
            why = skipped("no server URL: sync.url is not set (or --server-url)")
            self._add(Step.SYNC, "sync endpoint", why, started)
            self._add(Step.CLOCK, "server clock", why, started)
            return
        ways = self._sync_ways(urls)
        for index, way in enumerate(ways):
            started = time.monotonic()
            client = self._client(way)
            if client is None:
                why = skipped("no usable TLS settings (step 1)")
                self._add(Step.SYNC, way.name, why, started)
                self._add(Step.CLOCK, way.url, why, started)
                return
            try:
                finding = self._sync(client, way.url)
                self._add(Step.SYNC, way.name, finding, started)
                started = time.monotonic()
                self._add(Step.CLOCK, way.url, self._clock(client, way.url), started)
                return
            except httpx.HTTPError as exc:
                last = index == len(ways) - 1
                finding = diagnose.server_unreachable(root_cause(exc), way.url)
                if not last:
                    finding = Finding(Status.WARN, f"{finding.detail}; the agent goes on to "
                                      f"{ways[index + 1].name}", finding.hint)
                self._add(Step.SYNC, way.name, finding, started)
            finally:
                client.close()
        self._add(Step.CLOCK, "server clock", skipped("the sync endpoint was not reached"),
                  time.monotonic())

    def _sync(self, client: ServerClient, server: str) -> Finding:
        """The sync endpoint's answer; a way failure raises ``httpx.HTTPError``."""
        agent_id = self.settings.identity.agent_id
        url = f"{server.rstrip('/')}/api/v1/agents/{agent_id}/sync"
        answer = client.sync(agent_id, self.material.token)
        return diagnose.sync_answer(answer.status, answer.code, answer.message, url=url,
                                    agent_id=agent_id,
                                    method="token" if self.material.token else "certificate")

    @staticmethod
    def _clock(client: ServerClient, server: str) -> Finding:
        try:
            theirs, ours, source = client.clock()
        except ValueError as exc:
            return Finding(Status.WARN, f"cannot read the server's clock: {exc}",
                           "compare the clocks by hand; commands tolerate 60 s")
        except httpx.HTTPError as exc:
            return diagnose.server_unreachable(root_cause(exc), server)
        return diagnose.clock(theirs - ours, source)


def _command_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return str(data.get("id")) if isinstance(data, dict) else None


def _last_route(settings: AgentSettings) -> str | None:
    """The route the agent remembers as the last that worked (its state file)."""
    try:
        text = (settings.state_dir / ROUTE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None
