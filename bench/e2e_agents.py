"""End-to-end load generator: N simulated agents that answer wake-ups the way
``agent_push`` does, over raw MQTT-over-TLS and raw HTTP/1.1 on one asyncio
(uvloop) event loop.

Per agent, on (re)connect (as ``bench.loadgen``, plus what the real agent does):
TLS with its own client certificate, CONNECT (retained QoS 1 "offline" will),
one SUBSCRIBE QoS 1 to ``epns/v1/agents/<id>/cmd`` and ``epns/v1/all/cmd``,
then a retained QoS 1 "online" birth on its presence topic. No sync after
the first connect: only syncs caused by a wake-up are of interest there.

A connection lost after that (the broker restarted: the storm) is dialled
again as the agent does it (``agent_push.backoff.Backoff`` with the agent's
defaults, at most ``--reconnect-concurrency`` dials in flight, for at most
``--reconnect-cap`` seconds), and the agent syncs at once when it is back
(reason ``connect``, no wakes): one ``resync`` line each, with when it was
lost, back, and its sync's outcome.

On a command (QoS 1 PUBLISH): PUBACK; ``epns.envelope.verify_command`` against
the pinned server key (signature, time, target, replay); an ``ack`` event
(QoS 1) on ``epns/v1/agents/<id>/evt``; then a sync as the agent's HTTP sync
does it (``agent_push.http_exchange``): a new TLS connection to the server with
the same client certificate, ``POST`` of a JSON ``SyncReport`` (reason
``wake``, ``wakes`` = [command id]) and ``GET`` of the reply on that one
keep-alive connection, then close. A 429 or 503 is retried after its
Retry-After plus jitter (``agent_push.http_exchange.retry_delay``), at most 5
times, and counted. Last, a ``sync`` event (QoS 1), as the agent sends.

At most ``--http-concurrency`` HTTP connections are open in this process; a
sync waits for a slot to open one (that wait is inside the measured latency),
and gives it back while it sleeps before a retry.

Protocol with the orchestrator: JSON lines on stdout. ``prepared`` once the TLS
contexts are built; after a line on stdin, the connect phase, then
``connected``; then one ``sync`` line per command handled (its timings, on
``time.monotonic``, which every process on the machine shares); a ``stop``
line on stdin (or SIGTERM, or ``--max-run``) ends it: DISCONNECT everyone,
then ``report``.

    python -m bench.e2e_agents --mqtt-port P --http-port Q --pki-dir D \
        --bundles-dir B --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import ssl
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from agent_push.backoff import Backoff
from agent_push.cli import load_command_key
from agent_push.http_exchange import retry_delay
from bench.bench_pki import agent_id
from bench.loadgen import (
    DISCONNECT,
    RECONNECT,
    agent_connect,
    agent_subscribe,
    cpu_seconds,
    describe,
    emit,
    progress,
)
from bench.processes import raise_nofile_limit
from epns import topics
from epns.envelope import (
    Event,
    EventType,
    Presence,
    PresenceState,
    ReplayGuard,
    encode_event,
    encode_presence,
    verify_command,
)
from epns.errors import MalformedPacket, MessageError
from epns.mqtt import (
    SUBACK_FAILURE,
    Connack,
    Decoder,
    Packet,
    Publish,
    Role,
    Suback,
    puback_bytes,
    publish_bytes,
)
from epns.sync_contract import (
    SyncFormat,
    SyncReason,
    SyncReport,
    encode_report,
    retry_after_seconds,
    sync_path,
)
from epns.tokens import PublicKey

RETRYABLE = (429, 503)
# As the agent's defaults (sync.max_retries, sync.max_retry_after).
MAX_RETRIES = 5
MAX_RETRY_AFTER = 300.0
HTTP_TIMEOUT = 30.0
VERSION = "bench"


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response
    with a Content-Length (what uvicorn sends for these endpoints)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise HttpError("chunked answers are not expected from the sync endpoints")
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


class Connection:
    """One agent's HTTP/1.1 keep-alive connection to the server, opened (TLS
    with the agent's certificate) when a request needs it."""

    def __init__(self, fleet: Fleet, context: ssl.SSLContext) -> None:
        self._fleet = fleet
        self._context = context
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str]]:
        """Send ``request``, read the answer: (status, headers). An open
        connection holds one of the fleet's HTTP slots (a sleeping retry does
        not: real agents do not wait for each other)."""
        if self._streams is None:
            await self._fleet.http_slots.acquire()
            try:
                self._streams = await self._fleet.open_http(self._context)
            except BaseException:
                self._fleet.http_slots.release()
                raise
        reader, writer = self._streams
        writer.write(request)
        async with asyncio.timeout(HTTP_TIMEOUT):
            status, headers, _body = await read_answer(reader)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers

    def close(self) -> None:
        """Close the connection, if open."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
            self._fleet.http_slots.release()


class Sim(asyncio.Protocol):
    """One simulated agent: its MQTT connection and its wake-up handling."""

    def __init__(self, name: str, context: ssl.SSLContext, fleet: Fleet) -> None:
        self.name = name
        self.context = context
        self.fleet = fleet
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] | None = None
        self.replay = ReplayGuard(capacity=64)
        self.closed = False
        self._next_id = 10
        self._decoder = Decoder(Role.CLIENT)
        self._malformed: MalformedPacket | None = None
        # Connected once: a loss after that is dialled again (the storm).
        self.joined = False

    def reset(self) -> None:
        """A fresh connection's state, before dialling again."""
        self.transport = None
        self.closed = False
        self._decoder = Decoder(Role.CLIENT)
        self._malformed = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send(agent_connect(self.name, 300))

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        try:
            while (packet := decoder.next_packet()) is not None:
                self._handle(packet)
        except MalformedPacket as exc:
            # The broker broke the protocol: drop the connection, as the
            # agent's client would, and say why when it is counted lost.
            self._malformed = exc
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exc = exc or self._malformed
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(describe(exc)))
        elif not self.fleet.stopping:
            self.fleet.lost[describe(exc)] += 1
            if self.joined:
                self.fleet.spawn(self.come_back(time.monotonic()))

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _handle(self, packet: Packet) -> None:
        if isinstance(packet, Publish):  # first: the packet of the hot path
            self._on_publish(packet)
        elif isinstance(packet, Connack):
            if packet.return_code != 0:
                self._fail(f"CONNACK return code {packet.return_code}")
                return
            self._send(agent_subscribe([topics.agent_cmd(self.name), topics.ALL_CMD]))
        elif isinstance(packet, Suback):
            codes = packet.return_codes
            if len(codes) < 2 or SUBACK_FAILURE in codes:
                self._fail(f"SUBACK refused a filter: {list(codes)}")
                return
            birth = Presence(PresenceState.ONLINE, at=time.time(), route="primary",
                             version=VERSION, hostname=self.name)
            self._send(publish_bytes(topics.agent_presence(self.name), encode_presence(birth),
                                     1, self._packet_id(), retain=True))
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)

    def _fail(self, reason: str) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))

    def _on_publish(self, packet: Publish) -> None:
        received = time.monotonic()
        topic = packet.topic
        if packet.packet_id is not None:
            self._send(puback_bytes(packet.packet_id))
        try:
            command = verify_command(packet.payload, self.fleet.key, agent_id=self.name,
                                     groups=frozenset(), replay=self.replay, now=time.time())
        except MessageError as exc:
            self.fleet.rejected[f"{type(exc).__name__} on {topic.split('/')[2]}"] += 1
            return
        self.publish_event(Event(EventType.ACK, time.time(), command.id,
                                 {"type": command.type.value}))
        self.fleet.spawn(self.sync(command.id, str(command.body.get("wakeup", "")), received))

    def publish_event(self, report: Event) -> None:
        """An event on this agent's evt topic, QoS 1."""
        self._send(publish_bytes(topics.agent_evt(self.name), encode_event(report), 1,
                                 self._packet_id()))

    async def come_back(self, lost: float) -> None:
        """Dial again after a loss as the agent does (Backoff), then sync
        at once (reason connect): one ``resync`` line."""
        fleet = self.fleet
        backoff = Backoff(RECONNECT.base, RECONNECT.cap)
        deadline = lost + fleet.args.reconnect_cap
        outcome = "gave up"
        while not fleet.stopping and time.monotonic() < deadline:
            await asyncio.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
            async with fleet.reconnect_slots:
                self.reset()
                outcome = await fleet.connect(self)
            if outcome == "ok":
                break
            fleet.refused[outcome] += 1
        if outcome != "ok":
            emit("resync", agent=self.name, lost=lost, back=None, ok=False, error=outcome)
            return
        back = time.monotonic()
        record = await self.sync(None, "", back, reason=SyncReason.CONNECT, emit_as=None)
        emit("resync", lost=lost, back=back, **record)

    async def sync(self, command_id: str | None, wakeup: str, received: float, *,
                   reason: SyncReason = SyncReason.WAKE,
                   emit_as: str | None = "sync") -> dict[str, Any]:
        """One sync: POST, GET, sync event; its timings go to stdout as
        ``emit_as`` (and are returned)."""
        record: dict[str, Any] = {"agent": self.name, "wakeup": wakeup, "command": command_id,
                                  "received": received, "retries": 0, "ok": False}
        started_at, sync_id = time.time(), uuid.uuid4().hex
        wakes = () if command_id is None else (command_id,)
        try:
            await self._exchange(record, reason, wakes, started_at, sync_id)
        except (OSError, ssl.SSLError, HttpError, asyncio.IncompleteReadError,
                TimeoutError) as exc:
            record["error"] = describe(exc)
        self.publish_event(Event(EventType.SYNC, time.time(), None, {
            "sync_id": sync_id, "started_at": started_at, "reason": reason.value,
            "wakes": list(wakes), "ok": record["ok"], "detail": record.get("error", "")}))
        if emit_as is not None:
            emit(emit_as, **record)
        return record

    async def _exchange(self, record: dict[str, Any], reason: SyncReason, wakes: tuple[str, ...],
                        started_at: float, sync_id: str) -> None:
        fleet = self.fleet
        report = encode_report(SyncReport(
            agent_id=self.name, sync_id=sync_id, started_at=started_at, reason=reason,
            wakes=wakes, changes={"hostname": self.name, "version": VERSION,
                                          "route": "primary", "connected": True,
                                          "addresses": ["127.0.0.1/8"]}), SyncFormat.JSON)
        path = sync_path(self.name)
        post = (f"POST {path} HTTP/1.1\r\nHost: {fleet.host_header}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(report)}\r\n\r\n"
                ).encode() + report
        get = (f"GET {path} HTTP/1.1\r\nHost: {fleet.host_header}\r\n"
               "Accept: application/json\r\n\r\n").encode()
        async with asyncio.timeout(HTTP_TIMEOUT * (MAX_RETRIES + 1) + MAX_RETRY_AFTER):
            http = Connection(fleet, self.context)
            try:
                status = await self._step(record, "post", post, http)
                if 200 <= status < 300:
                    status = await self._step(record, "get", get, http)
                record["ok"] = 200 <= status < 300
                if not record["ok"]:
                    record["error"] = f"HTTP {status}"
            finally:
                http.close()

    async def _step(self, record: dict[str, Any], step: str, request: bytes,
                    http: Connection) -> int:
        retries = 0
        while True:
            sent = time.monotonic()
            record.setdefault(f"{step}_first_sent", sent)
            record[f"{step}_sent"] = sent
            status, headers = await http.exchange(request)
            record[f"{step}_answered"] = time.monotonic()
            if status not in RETRYABLE or retries >= MAX_RETRIES:
                return status
            self.fleet.busy[status] += 1
            record["retries"] += 1
            asked = retry_after_seconds(headers.get("retry-after"), time.time())
            # A new connection for the retry, as httpx's pool in the agent's
            # child ends up making: the server's keep-alive (5 s) is shorter
            # than any Retry-After it sends.
            http.close()
            await asyncio.sleep(retry_delay(asked, retries, MAX_RETRY_AFTER, self.fleet.rng))
            retries += 1

    def disconnect(self) -> None:
        """DISCONNECT (no will) and close."""
        self._send(DISCONNECT)
        if self.transport is not None and not self.closed:
            self.transport.close()


class Fleet:
    """All simulated agents, their shared settings and their counters."""

    def __init__(self, args: argparse.Namespace, key: PublicKey) -> None:
        self.args = args
        self.key = key
        self.host_header = f"127.0.0.1:{args.http_port}"
        self.http_slots = asyncio.Semaphore(args.http_concurrency)
        self.reconnect_slots = asyncio.Semaphore(args.reconnect_concurrency)
        self.rng = random.Random()
        self.sims: list[Sim] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.lost: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.busy: Counter[int] = Counter()
        # Failed dials after a loss, by reason.
        self.refused: Counter[str] = Counter()
        self.stopping = False

    def spawn(self, coroutine: Any) -> None:
        """Run a sync in the background, keeping a reference until it ends."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open_http(self, context: ssl.SSLContext
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new TLS connection to the server, with the agent's certificate."""
        async with asyncio.timeout(HTTP_TIMEOUT):
            return await asyncio.open_connection("127.0.0.1", self.args.http_port, ssl=context,
                                                 server_hostname="127.0.0.1")

    async def connect(self, sim: Sim) -> str:
        """TCP, TLS, CONNECT, SUBSCRIBE and birth for one agent; "ok" or why not."""
        loop = asyncio.get_running_loop()
        sim.ready = loop.create_future()
        try:
            async with asyncio.timeout(30):
                await loop.create_connection(lambda: sim, "127.0.0.1", self.args.mqtt_port,
                                             ssl=sim.context, server_hostname="127.0.0.1",
                                             ssl_handshake_timeout=35)
                await sim.ready
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            if sim.transport is not None:
                sim.transport.abort()
            return describe(exc)
        sim.joined = True
        return "ok"

    async def connect_all(self) -> Counter[str]:
        """Connect every agent, ``--concurrency`` at a time."""
        queue = iter(self.sims)
        outcomes: Counter[str] = Counter()

        async def worker() -> None:
            for sim in queue:
                outcomes[await self.connect(sim)] += 1

        await asyncio.gather(*(worker() for _ in range(min(self.args.concurrency,
                                                              len(self.sims)))))
        return outcomes


def build_contexts(pki_dir: Path, bundles: Path, names: list[str]) -> list[ssl.SSLContext]:
    """One TLS client context per agent (its bundle's certificate), for the
    broker and the server alike: both present certificates of the fleet CA."""
    contexts = []
    for name in names:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(pki_dir / "ca.crt")
        context.load_cert_chain(bundles / name / "agent.crt", bundles / name / "agent.key")
        contexts.append(context)
    return contexts


async def wait_stop(stop: asyncio.Event) -> None:
    """Set ``stop`` on a ``stop`` line on stdin (or at its end)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        if not line or line.strip() == b"stop":
            stop.set()


async def run(args: argparse.Namespace, names: list[str], contexts: list[ssl.SSLContext],
              prepare: dict[str, float]) -> dict[str, Any]:
    """Connect, serve wake-ups until told to stop, disconnect; the report."""
    loop = asyncio.get_running_loop()
    fleet = Fleet(args, load_command_key(args.pki_dir / "signing.pub"))
    fleet.sims = [Sim(name, context, fleet) for name, context in zip(names, contexts,
                                                                      strict=True)]
    cpu_start, started = cpu_seconds(), time.monotonic()
    outcomes = await fleet.connect_all()
    connect = {"ok": outcomes.get("ok", 0), "errors": {k: v for k, v in outcomes.items()
                                                        if k != "ok"},
               "seconds": round(time.monotonic() - started, 2),
               "cpu_s": round(cpu_seconds() - cpu_start, 2)}
    emit("connected", **connect)
    progress(f"connected {connect['ok']} of {len(names)} in {connect['seconds']} s")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.create_task(wait_stop(stop))
    try:
        async with asyncio.timeout(args.max_run):
            await stop.wait()
    except TimeoutError:
        progress(f"--max-run {args.max_run:g} s reached")
    fleet.stopping = True
    unfinished = len(fleet.tasks)
    for task in list(fleet.tasks):
        task.cancel()
    await asyncio.gather(*fleet.tasks, return_exceptions=True)
    for sim in fleet.sims:
        sim.disconnect()
    await asyncio.sleep(0.5)
    reader.cancel()
    return {"count": len(names), "prepare": prepare, "connect": connect,
            "lost": dict(fleet.lost), "rejected": dict(fleet.rejected),
            "busy_answers": {str(k): v for k, v in fleet.busy.items()},
            "redial_failures": dict(fleet.refused),
            "syncs_cancelled_at_stop": unfinished, "cpu_s": round(cpu_seconds(), 2)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--pki-dir", type=Path, required=True,
                        help="the server's PKI (ca.crt, signing.pub)")
    parser.add_argument("--bundles-dir", type=Path, required=True,
                        help="one directory per agent with agent.crt and agent.key")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100,
                        help="agents connecting at a time")
    parser.add_argument("--http-concurrency", type=int, default=200,
                        help="HTTP connections open at a time in this process")
    parser.add_argument("--reconnect-concurrency", type=int, default=100,
                        help="dials in flight at a time after losses (the storm)")
    parser.add_argument("--reconnect-cap", type=float, default=120.0,
                        help="seconds an agent keeps dialling after a loss")
    parser.add_argument("--max-run", type=float, default=900.0,
                        help="seconds after the connect phase before stopping anyway")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 when every agent connected."""
    args = parse_args(argv)
    raise_nofile_limit()
    names = [agent_id(i) for i in range(1, args.count + 1)]
    cpu, wall = cpu_seconds(), time.monotonic()
    contexts = build_contexts(args.pki_dir, args.bundles_dir, names)
    prepare = {"seconds": round(time.monotonic() - wall, 2),
               "cpu_s": round(cpu_seconds() - cpu, 2)}
    emit("prepared", **prepare)
    if not sys.stdin.readline():
        return 2
    report = uvloop.run(run(args, names, contexts, prepare))
    emit("report", **report)
    return 0 if report["connect"]["ok"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
