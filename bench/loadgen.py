"""Load generator: N simulated epns agents holding idle MQTT-over-TLS connections.

One process, one asyncio (uvloop) event loop, MQTT 3.1.1 through the sans-IO
codec ``epns.mqtt`` (no client library): a simulated agent costs a socket, a
TLS context, a decoder and a small protocol object, so a single core can
drive thousands of them. Each agent has its own
client certificate (CN = agent id) from the benchmark PKI (``bench_pki``) and
behaves like a real agent on (re)connect:

1. TCP + TLS to the broker, verifying the broker against the fleet CA
   (offering no ALPN, or the protocols given with ``--alpn``, as the real
   agent offers ``mqtt`` to a one-port listener);
2. CONNECT: client id = agent id, clean session off, keep-alive 300 s, a
   retained QoS 1 will on ``epns/v1/agents/<id>/presence`` saying "offline";
3. after CONNACK 0, SUBSCRIBE QoS 1 to ``epns/v1/agents/<id>/cmd`` (with
   ``--fanout`` also to ``epns/v1/all/cmd``, as the real agent does);
4. done when the SUBACK grants the subscriptions.

At most ``--concurrency`` agents are between step 1 and 4 at any time. Then
all connections stay idle for ``--hold`` seconds (or until SIGTERM/SIGINT,
or the ``end`` command), sending nothing but PINGREQ when keep-alive requires
it and PUBACK for each QoS 1 PUBLISH, and finally send DISCONNECT and close.
A PUBLISH whose payload is a benchmark wake-up (``wake_payload``) is recorded
with its receive latency: receive time minus the send time in the payload.

With ``--reconnect`` an agent that loses its connection reconnects as the
real agent does: ``agent_push.backoff.Backoff`` with the agent's defaults
decides each wait, for at most ``--reconnect-cap`` seconds; at most
``--reconnect-concurrency`` attempts are in flight (with 10,000 at once the
load generator's one core timed out its own handshakes).

With ``--control``, commands on stdin while holding, each answered by one event:
``wait KIND COUNT TIMEOUT`` (KIND ``fanout`` or ``agent``) -> ``receipts``,
the latencies once COUNT wake-ups of that kind arrived; ``back COUNT
TIMEOUT`` -> ``back``, when each lost agent was lost and came back; ``end``.

Output is JSON lines on stdout: ``{"event": "prepared"}`` once the TLS
contexts are built, ``{"event": "connected", ...}`` when every agent has
connected or failed, the answers to commands, and last
``{"event": "report", ...}`` with everything. Progress goes to stderr.
Everything is bounded: per-agent timeout, a cap on the whole connect phase,
a cap on the hold, a cap on reconnecting.

    python -m bench.loadgen --port 8883 --count 2000 --hold 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import uvloop

# The real agent's reconnect policy, imported.
from agent_push.backoff import Backoff
from bench.bench_pki import DEFAULT_DIR, agent_id
from bench.processes import raise_nofile_limit
from bench.wake_payload import decode as decode_wake
from epns import topics
from epns.agent_config import ReconnectSettings
from epns.errors import MalformedPacket
from epns.mqtt import (
    SUBACK_FAILURE,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Pingreq,
    Publish,
    Role,
    Suback,
    Subscribe,
    Will,
    encode,
    puback_bytes,
)
from epns.topics import ALL_CMD

# The real agent's reconnect defaults (base 1 s, cap 120 s).
RECONNECT = ReconnectSettings()

SUBSCRIBE_PACKET_ID = 1
OFFLINE_PAYLOAD = b'{"v":1,"state":"offline","at":0}'
PINGREQ = encode(Pingreq())
DISCONNECT = encode(Disconnect())
# How often the single keep-alive task looks for agents due a PINGREQ.
PING_SCAN_INTERVAL = 1.0
PROGRESS_INTERVAL = 5.0


def describe(exc: BaseException | None) -> str:
    """A short, low-cardinality reason for a failed or lost connection."""
    if exc is None:
        return "closed by the broker"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: broker certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def agent_connect(name: str, keepalive: int) -> bytes:
    """CONNECT as the agent sends it: clean session off, a retained QoS 1
    "offline" will on its presence topic, no username or password (the
    client certificate is the identity)."""
    will = Will(topics.agent_presence(name), OFFLINE_PAYLOAD, qos=1, retain=True)
    return encode(Connect(name, keepalive, clean_session=False, will=will))


def agent_subscribe(filters: list[str]) -> bytes:
    """SUBSCRIBE at QoS 1 to each filter, as the agent does after CONNACK 0."""
    return encode(Subscribe(SUBSCRIBE_PACKET_ID, tuple((name, 1) for name in filters)))


class AgentFailure(Exception):
    """The broker answered, but not with success (CONNACK code, SUBACK 0x80)."""


class Agent(asyncio.Protocol):
    """One simulated agent: its TLS context, its connection and its timings.

    The same object serves every connection attempt of the agent (``reset``
    between attempts), so reconnects keep its identity and its counters."""

    def __init__(self, name: str, context: ssl.SSLContext, keepalive: int,
                 filters: list[str], hooks: AgentHooks) -> None:
        self.name = name
        self.context = context
        self.keepalive = keepalive
        self.filters = filters
        self._hooks = hooks
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.stage = "not started"
        self.outcome: str | None = None  # "ok", or why it failed
        self.closed = False
        self.aborted = False  # closed by us: not a loss
        self.ready = False
        self.started = self.tls_done = self.suback_at = self.last_tx = 0.0
        self.tls_version: str | None = None
        self.alpn: str | None = None  # the protocol the broker selected, if any
        self.publishes = 0
        self._decoder = Decoder(Role.CLIENT)
        self._malformed: MalformedPacket | None = None

    def reset(self) -> None:
        """Forget the last connection before a new attempt."""
        self.transport = None
        self.waiter = None
        self.stage = "not started"
        self.outcome = None
        self.closed = self.aborted = self.ready = False
        self._decoder = Decoder(Role.CLIENT)
        self._malformed = None

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # With ssl=..., the loop calls this once the TLS handshake is done.
        self.transport = transport  # type: ignore[assignment]
        now = time.monotonic()
        self.tls_done = now
        ssl_object = transport.get_extra_info("ssl_object")
        self.tls_version = ssl_object.version() if ssl_object is not None else None
        self.alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.stage = "CONNACK"
        self._send(agent_connect(self.name, self.keepalive), now)

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        try:
            while (packet := decoder.next_packet()) is not None:
                self._handle(packet)
        except MalformedPacket as exc:
            # The broker broke the protocol: drop the connection, as an
            # agent's client would, and say why when it is reported lost.
            self._malformed = exc
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exc = exc or self._malformed
        if self.aborted:
            return
        if self.ready:
            self._hooks.lost(self, describe(exc))
        else:
            self._fail(f"connection closed while waiting for {self.stage}: {describe(exc)}")

    # -- MQTT ---------------------------------------------------------------

    def _send(self, data: bytes, now: float) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)
            self.last_tx = now

    def _handle(self, packet: Packet) -> None:
        if isinstance(packet, Publish):  # first: the one packet of the hot path
            now = time.monotonic()
            self.publishes += 1
            if packet.packet_id is not None:
                self._send(puback_bytes(packet.packet_id), now)
            self._hooks.received(packet.topic, packet.payload, now)
        elif isinstance(packet, Connack) and self.stage == "CONNACK":
            if packet.return_code != 0:
                self._fail(f"CONNACK return code {packet.return_code}")
                return
            self.stage = "SUBACK"
            self._send(agent_subscribe(self.filters), time.monotonic())
        elif isinstance(packet, Suback) and self.stage == "SUBACK":
            codes = packet.return_codes
            if len(codes) != len(self.filters) or SUBACK_FAILURE in codes:
                self._fail(f"SUBACK refused a subscription (codes {list(codes)})")
                return
            self.suback_at = time.monotonic()
            self.stage = "idle"
            self.ready = True
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def _fail(self, reason: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(AgentFailure(reason))

    def ping_if_due(self, now: float) -> None:
        """Send PINGREQ when half the keep-alive passed without sending."""
        if self.ready and not self.closed and now - self.last_tx >= self.keepalive / 2:
            self._send(PINGREQ, now)

    def disconnect(self, now: float) -> None:
        """Send DISCONNECT (the broker then drops the will) and close."""
        self._send(DISCONNECT, now)
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (no DISCONNECT)."""
        if self.transport is not None and not self.closed:
            self.aborted = True
            self.transport.abort()


def build_contexts(pki_dir: Path, names: list[str], tls_max: str | None,
                   alpn: list[str] | None = None) -> list[ssl.SSLContext]:
    """One client TLS context per agent: Python binds a client certificate to
    a context, so each identity needs its own (about 1 ms and 35 KiB each).
    With ``alpn``, each offers those protocols in the handshake (none by default)."""
    ca = pki_dir / "ca.crt"
    contexts = []
    for name in names:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls_max == "1.2":
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(ca)
        context.load_cert_chain(pki_dir / "agents" / f"{name}.crt",
                                pki_dir / "agents" / f"{name}.key")
        if alpn:
            context.set_alpn_protocols(alpn)
        contexts.append(context)
    return contexts


def cpu_seconds() -> float:
    """This process's user + system CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max in milliseconds (nearest rank), or None if empty."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {k: round(v * 1000, 1) for k, v in
            (("p50", rank(0.50)), ("p90", rank(0.90)), ("p99", rank(0.99)), ("max", ordered[-1]))}


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed: the orchestrator acts on it at once."""
    print(json.dumps({"event": event, **fields}), flush=True)


def progress(message: str) -> None:
    """A human progress line on stderr."""
    print(f"loadgen {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class AgentHooks(Protocol):
    """What an agent reports to its fleet."""

    def lost(self, agent: Agent, reason: str) -> None:
        """A connected agent lost its connection."""

    def received(self, topic: str, payload: bytes, now: float) -> None:
        """An agent received a PUBLISH at ``now`` (monotonic)."""


class LoadGenerator:
    """Connects the agents, holds them, closes them, and reports; with
    ``--control``, also answers the orchestrator's commands (module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.agents: list[Agent] = []
        self.stop = asyncio.Event()
        self.lost_reasons: Counter[str] = Counter()
        self.lost_during_hold = 0
        self.holding = False
        # Wake-ups received, by kind: latency (s) of each, and the last arrival.
        self.receipts: dict[str, list[float]] = {"fanout": [], "agent": []}
        self.last_receipt: dict[str, float] = {}
        self.unrecognised_publishes = 0
        # Reconnects (--reconnect): when each agent was lost and came back.
        self.lost_at: dict[str, float] = {}
        self.back_at: dict[str, float] = {}
        self.refused: Counter[str] = Counter()
        self.gave_up = 0
        self._reconnects: set[asyncio.Task[None]] = set()
        self.reconnect_slots = asyncio.Semaphore(args.reconnect_concurrency)

    def lost(self, agent: Agent, reason: str) -> None:
        """A connected agent lost its connection (before teardown)."""
        if self.holding or not self.stop.is_set():
            self.lost_reasons[reason] += 1
            if self.holding:
                self.lost_during_hold += 1
        if self.args.reconnect and not self.stop.is_set():
            self.lost_at.setdefault(agent.name, time.monotonic())
            task = asyncio.get_running_loop().create_task(self.reconnect(agent))
            self._reconnects.add(task)
            task.add_done_callback(self._reconnects.discard)

    def received(self, topic: str, payload: bytes, now: float) -> None:
        """Record a wake-up's latency from the send time in its payload."""
        decoded = decode_wake(payload)
        if decoded is None:
            self.unrecognised_publishes += 1
            return
        kind = "fanout" if topic == ALL_CMD else "agent"
        self.receipts[kind].append(now - decoded[1])
        self.last_receipt[kind] = now

    async def reconnect(self, agent: Agent) -> None:
        """Like the real agent after a loss: wait the Backoff's delay, try,
        repeat; give up after ``--reconnect-cap`` seconds (bounded run)."""
        backoff = Backoff(RECONNECT.base, RECONNECT.cap)
        deadline = time.monotonic() + self.args.reconnect_cap
        while not self.stop.is_set():
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                self.gave_up += 1
                return
            await asyncio.sleep(delay)
            if self.stop.is_set():
                return
            # One core simulates every agent: unbounded, thousands of
            # handshakes at once would time out in the load generator itself,
            # not at the broker. An agent waiting for a slot has not dialled yet.
            async with self.reconnect_slots:
                agent.reset()
                await self.connect_one(agent)
            if agent.outcome == "ok":
                self.back_at[agent.name] = agent.suback_at
                return
            self.refused[agent.outcome or "unknown"] += 1

    async def connect_one(self, agent: Agent) -> None:
        """Steps 1-4 of the module docstring for one agent, bounded in time."""
        loop = asyncio.get_running_loop()
        agent.started = time.monotonic()
        agent.stage = "TCP connect + TLS handshake"
        agent.waiter = loop.create_future()
        timeout = self.args.agent_timeout
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: agent, self.args.host, self.args.port, ssl=agent.context,
                    server_hostname=self.args.server_name,
                    # The overall timeout decides; this one must not fire first.
                    ssl_handshake_timeout=timeout + 5)
                await agent.waiter
            agent.outcome = "ok"
        except TimeoutError:
            # The SUBACK may have arrived while the timeout was already due.
            agent.outcome = ("ok" if agent.ready
                             else f"timeout ({timeout:g} s) waiting for {agent.stage}")
        except AgentFailure as exc:
            agent.outcome = str(exc)
        except (OSError, ssl.SSLError) as exc:
            agent.outcome = f"{agent.stage}: {describe(exc)}"
        if agent.outcome != "ok":
            agent.abort()

    async def connect_all(self) -> None:
        """Connect every agent with at most ``concurrency`` in flight; stop
        taking new agents on SIGTERM, give up on all after ``phase_timeout``."""
        queue: Iterator[Agent] = iter(self.agents)

        async def worker() -> None:
            for agent in queue:
                if self.stop.is_set():
                    return
                await self.connect_one(agent)

        async def report_progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL)
                ok = sum(agent.outcome == "ok" for agent in self.agents)
                done = sum(agent.outcome is not None for agent in self.agents)
                progress(f"connect phase: {ok} ok, {done - ok} failed, of {len(self.agents)}")

        workers = [asyncio.create_task(worker())
                   for _ in range(min(self.args.concurrency, len(self.agents)))]
        reporter = asyncio.create_task(report_progress())
        try:
            async with asyncio.timeout(self.args.phase_timeout):
                await asyncio.gather(*workers)
        except TimeoutError:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            reporter.cancel()
        for agent in self.agents:
            if agent.outcome is None and agent.ready:
                # Its SUBACK arrived; only the bookkeeping task was cancelled.
                agent.outcome = "ok"
            elif agent.outcome is None:
                # Never started (phase cap, or SIGTERM), or cut off in flight.
                where = "before it started" if agent.started == 0 else f"during {agent.stage}"
                why = ("stopped by signal" if self.stop.is_set()
                       else f"connect phase cap ({self.args.phase_timeout:g} s) reached")
                agent.outcome = f"{why} {where}"
                agent.abort()

    # -- commands from the orchestrator (--control) ------------------------

    async def control(self) -> None:
        """Read commands on stdin, one per line, and answer each with an event."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     sys.stdin.buffer)
        while not self.stop.is_set():
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "end":
                self.stop.set()
            elif line[0] == "wait":
                await self.wait_receipts(line[1], int(line[2]), float(line[3]))
            elif line[0] == "back":
                await self.wait_back(int(line[1]), float(line[2]))
            else:
                emit("error", message=f"unknown command {line!r}")

    async def wait_receipts(self, kind: str, count: int, timeout: float) -> None:
        """Wait until ``count`` wake-ups of ``kind`` arrived (or ``timeout``),
        then report their latencies and forget them."""
        started = time.monotonic()
        while len(self.receipts[kind]) < count and time.monotonic() - started < timeout:
            await asyncio.sleep(0.01)
        latencies, self.receipts[kind] = self.receipts[kind], []
        emit("receipts", kind=kind, expected=count, received=len(latencies),
             latencies_s=[round(x, 6) for x in latencies],
             last_at=self.last_receipt.get(kind), waited_s=round(time.monotonic() - started, 3),
             unrecognised=self.unrecognised_publishes, cpu_s=round(cpu_seconds(), 3))

    async def wait_back(self, count: int, timeout: float) -> None:
        """Wait until ``count`` agents were lost and came back (or ``timeout``);
        report when each was lost and back, and the refused attempts."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            settled = self.lost_at and not self._reconnects
            if len(self.back_at) >= count or settled:
                break
            await asyncio.sleep(0.05)
        emit("back", lost_at=list(self.lost_at.values()), back_at=list(self.back_at.values()),
             refused=dict(self.refused.most_common()), refused_total=sum(self.refused.values()),
             gave_up=self.gave_up, still_reconnecting=len(self._reconnects),
             ready=sum(a.ready and not a.closed for a in self.agents),
             cpu_s=round(cpu_seconds(), 3))
        self.lost_at, self.back_at = {}, {}
        self.refused.clear()

    async def keep_alive(self) -> None:
        """One task for all agents: PINGREQ for those due one."""
        while True:
            await asyncio.sleep(PING_SCAN_INTERVAL)
            now = time.monotonic()
            for agent in self.agents:
                agent.ping_if_due(now)

    async def close_all(self, timeout: float = 10.0) -> dict[str, Any]:
        """DISCONNECT (no will) and close every open connection; wait for the
        sockets to close, at most ``timeout`` seconds."""
        started = time.monotonic()
        open_agents = [a for a in self.agents if a.transport is not None and not a.closed]
        for agent in open_agents:
            agent.disconnect(started)
        while any(not a.closed for a in open_agents) and time.monotonic() - started < timeout:
            await asyncio.sleep(0.05)
        still_open = sum(not a.closed for a in open_agents)
        for agent in open_agents:
            agent.abort()
        return {"closed": len(open_agents) - still_open, "not_closed_in_time": still_open,
                "seconds": round(time.monotonic() - started, 2)}

    async def run(self, prepare: dict[str, float]) -> dict[str, Any]:
        """The whole run; returns the report."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        cpu_start, phase_start = cpu_seconds(), time.monotonic()
        progress(f"connecting {len(self.agents)} agents to {self.args.host}:{self.args.port}, "
                 f"{self.args.concurrency} in flight")
        await self.connect_all()
        phase_end, cpu_connected = time.monotonic(), cpu_seconds()
        ok = [a for a in self.agents if a.outcome == "ok"]
        errors = Counter(a.outcome for a in self.agents if a.outcome != "ok")
        last_ok = max((a.suback_at for a in ok), default=phase_start)
        connect = {
            "ok": len(ok),
            "failed": len(self.agents) - len(ok),
            "errors": dict(errors.most_common()),
            # Time until the last agent had its SUBACK; null unless all made it.
            "time_to_connect_all_s": (round(last_ok - phase_start, 3)
                                      if len(ok) == len(self.agents) else None),
            "time_to_last_success_s": round(last_ok - phase_start, 3) if ok else None,
            "connect_phase_s": round(phase_end - phase_start, 3),
            "latency_ms": percentiles([a.suback_at - a.started for a in ok]),
            "tls_handshake_ms": percentiles([a.tls_done - a.started for a in ok]),
            "tls_versions": dict(Counter(a.tls_version for a in ok)),
            "alpn_selected": dict(Counter(a.alpn or "none" for a in ok)),
            "cpu_s": round(cpu_connected - cpu_start, 2),
        }
        emit("connected", **connect)
        progress(f"connected {len(ok)} of {len(self.agents)} in {connect['connect_phase_s']} s; "
                 f"holding up to {self.args.hold:g} s")

        self.holding = True
        pinger = asyncio.create_task(self.keep_alive())
        control = asyncio.create_task(self.control()) if self.args.control else None
        hold_start = time.monotonic()
        if not self.stop.is_set():
            try:
                async with asyncio.timeout(self.args.hold):
                    await self.stop.wait()
            except TimeoutError:
                pass
        if control is not None:
            control.cancel()
        self.holding = False
        pinger.cancel()
        hold_end, cpu_held = time.monotonic(), cpu_seconds()
        still_open = sum(a.ready and not a.closed for a in self.agents)
        self.stop.set()
        for task in list(self._reconnects):
            task.cancel()
        await asyncio.gather(*self._reconnects, return_exceptions=True)
        teardown = await self.close_all()
        return {
            "count": len(self.agents),
            "first_agent": self.agents[0].name if self.agents else None,
            "concurrency": self.args.concurrency,
            "keepalive": self.args.keepalive,
            "tls_max": self.args.tls_max,
            "alpn_offered": self.args.alpn,
            "prepare": prepare,
            **connect,
            "hold": {
                "seconds": round(hold_end - hold_start, 2),
                "open_at_end": still_open,
                "lost": self.lost_during_hold,
                "lost_reasons": dict(self.lost_reasons.most_common()),
                "publishes_received": sum(a.publishes for a in self.agents),
                "cpu_s": round(cpu_held - cpu_connected, 2),
            },
            "teardown": teardown,
            "cpu_s": {"prepare": prepare["cpu_s"], "connect": connect["cpu_s"],
                      "hold": round(cpu_held - cpu_connected, 2),
                      "total": round(cpu_seconds(), 2)},
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }


def read_line_unbuffered() -> None:
    """Wait for one line on stdin without buffering past it: later lines are
    the --control commands, read by the event loop."""
    while os.read(0, 1) not in (b"\n", b""):
        pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="broker address (loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-name", default="127.0.0.1",
                        help="name the broker certificate is verified against")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--count", type=int, required=True, help="number of agents")
    parser.add_argument("--first", type=int, default=1, help="index of the first agent id")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="agents between TCP connect and SUBACK at any time")
    parser.add_argument("--keepalive", type=int, default=300)
    parser.add_argument("--agent-timeout", type=float, default=30.0,
                        help="seconds one agent may take from TCP connect to SUBACK")
    parser.add_argument("--phase-timeout", type=float, default=180.0,
                        help="cap on the whole connect phase, seconds")
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds to hold the connections idle (SIGTERM ends it early)")
    parser.add_argument("--tls-max", choices=("1.2", "1.3"), default=None,
                        help="highest TLS version offered (default: let the broker choose)")
    parser.add_argument("--alpn", action="append", metavar="PROTOCOL",
                        help="offer this ALPN protocol in the TLS handshake (repeatable; "
                             "default: offer none)")
    parser.add_argument("--wait-go", action="store_true",
                        help="after building the TLS contexts, wait for a line on stdin")
    parser.add_argument("--fanout", action="store_true",
                        help="also subscribe to the fan-out topic epns/v1/all/cmd, as real "
                             "agents do")
    parser.add_argument("--control", action="store_true",
                        help="while holding, take commands on stdin (wait, back, end)")
    parser.add_argument("--reconnect", action="store_true",
                        help="reconnect lost agents with the agent's Backoff")
    parser.add_argument("--reconnect-cap", type=float, default=120.0,
                        help="seconds an agent keeps trying to reconnect after a loss")
    parser.add_argument("--reconnect-concurrency", type=int, default=1000,
                        help="reconnect attempts in flight at most")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load generator only dials the loopback interface")
    if args.count < 1 or args.concurrency < 1:
        parser.error("--count and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 when every agent connected and stayed."""
    args = parse_args(argv)
    raise_nofile_limit()
    names = [agent_id(i) for i in range(args.first, args.first + args.count)]
    missing = [n for n in names if not (args.pki_dir / "agents" / f"{n}.crt").exists()]
    if missing:
        print(f"loadgen: no certificate for {missing[0]} (and {len(missing) - 1} more) in "
              f"{args.pki_dir}; run python -m bench hold once to create them", file=sys.stderr)
        return 2
    # TLS contexts are built before the clock starts: that cost is the load
    # generator's, not the broker's.
    cpu, wall = cpu_seconds(), time.monotonic()
    contexts = build_contexts(args.pki_dir, names, args.tls_max, args.alpn)
    prepare = {"seconds": round(time.monotonic() - wall, 2),
               "cpu_s": round(cpu_seconds() - cpu, 2)}
    emit("prepared", **prepare)
    if args.wait_go:
        read_line_unbuffered()

    async def run() -> dict[str, Any]:
        generator = LoadGenerator(args)
        filters = ["epns/v1/agents/{}/cmd", *([ALL_CMD] if args.fanout else [])]
        generator.agents = [Agent(name, context, args.keepalive,
                                  [f.format(name) for f in filters], generator)
                            for name, context in zip(names, contexts, strict=True)]
        return await generator.run(prepare)

    report = uvloop.run(run())
    emit("report", **report)
    return 0 if report["failed"] == 0 and report["hold"]["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
