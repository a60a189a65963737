"""Scenario 6: end-to-end wake-up through the all-in-one server.

From the API call ``POST /api/v1/wakeups`` to the agents' sync arriving at the
server, with N simulated agents (``python -m bench.e2e_agents``, its own process) that do
what a real agent does on a wake-up: PUBACK, verify, ack event, sync (POST +
GET over mTLS), sync event. Run against:

- ``epns``: ``epns-server run`` with its embedded broker (the default);
- ``mosquitto``: ``epns-server run`` with the embedded broker off and
  ``[mqtt]`` pointed at Debian's Mosquitto running the shipped contract config
  (``docker/mosquitto/``) with the same CA, certificates and ACL.

Per broker, with a fresh server (its own PKI, SQLite database and state):

1. create an API token (``epns-server token create``) and the N agents through
   ``POST /api/v1/agents`` (the server issues each its certificate), then
   connect them all; none of this is timed;
2. (a) one wake-up of all (``{"all": true}``); (b) a stream of single-agent
   wake-ups at a bounded rate, each for another agent;
3. per target: API call sent -> the agent's sync POST sent (the attempt the
   server accepted) and -> that POST answered 2xx (clock: ``time.monotonic``,
   shared by the processes), and -> satisfied on the server's clock
   (``satisfied_at`` of ``GET /api/v1/wakeups/<id>``, polled, bounded);
   p50/p99/max, the time until every target is satisfied, satisfied/targets,
   429 answers; CPU of the server, the broker and the load generator per
   wake-up target, from /proc/PID/stat;
4. (c) the storm with sync: the broker is killed (the embedded one: SIGKILL,
   and the server starts it again; Mosquitto: stopped and started again on
   its port); every agent dials again with the agent's backoff and syncs
   (reason ``connect``) once it is back: the time from the kill until all
   are back and until all have synced, failed syncs, and the server's CPU
   per agent; then one more wake-all proves that no wake-up is lost after it.

``--database postgres`` runs the server on a throwaway PostgreSQL cluster
(``bench/postgres.py``) instead of its SQLite file.

``run()`` is what the suite calls; the command prints a markdown table (epns
vs Mosquitto) and writes JSON to ``bench/results/``.

    python -m bench end-to-end            # 1,000 agents
    python -m bench end-to-end --quick    # 200 agents
    python -m bench end-to-end --agents 10000 --stream-rate 20 --database postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import RESULTS, ROOT, postgres
from bench.brokers import MOSQUITTO, Broker, free_port, start_mosquitto
from bench.processes import JsonLinesChild, stop_process, wait_for_line
from bench.procfs import children, every_process, proc_cpu_seconds, system_cpu_seconds
from bench.results_io import code_identity, machine_info, percentiles_ms
from epns import pki

BROKERS = ("epns", "mosquitto")
READY_TIMEOUT_S = 60.0
# Every wait below is bounded by one of these.
CONNECT_TIMEOUT_S = 180.0
PHASE_TIMEOUT_S = 240.0
SETTLE_MAX_S = 60.0
POLL_INTERVAL_S = 1.0
SATISFY_GRACE_S = 3.0
# The stream of single-agent wake-ups (b), per second unless --stream-rate.
STREAM_RATE = 10.0
# The storm (c): how long the agents keep dialling, and dials at a time.
RECONNECT_CAP_S = 120.0
DATABASES = ("sqlite", "postgres")


@dataclass(frozen=True)
class Plan:
    """How big a run is."""

    agents: int
    stream: int  # single-agent wake-ups in phase (b)
    http_concurrency: int = 200
    stream_rate: float = STREAM_RATE
    storm: bool = True  # phase (c)
    database: str = "sqlite"


def plan_for(quick: bool, agents: int | None, *, stream_rate: float = STREAM_RATE,
             storm: bool = True, database: str = "sqlite") -> Plan:
    """The default sizes: 1,000 agents and 200 single wake-ups; quick 200 and 50."""
    count = agents or (200 if quick else 1000)
    return Plan(agents=count, stream=min(count, 50 if quick else 200), stream_rate=stream_rate,
                storm=storm, database=database)


# -- processes -----------------------------------------------------------------

@dataclass
class Server:
    """``epns-server run`` (and its embedded broker, if any)."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    url: str
    log: Path
    broker_pid: int

    def cli(self, *args: str) -> str:
        """``epns-server ARGS`` on this server's settings; its stdout."""
        done = subprocess.run([sys.executable, "-m", "server_push", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"epns-server {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout


def server_env(pki_dir: Path, work: Path, http_port: int, mqtt_port: int,
               embedded: bool, database_url: str | None = None) -> dict[str, str]:
    """The server's settings (and its embedded broker's: the child inherits the
    environment) for the benchmark, all on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPNS_")}
    env.update({
        "EPNS_SERVER_HTTP__HOST": "127.0.0.1",
        "EPNS_SERVER_HTTP__PORT": str(http_port),
        "EPNS_SERVER_HTTP__CERT": str(pki_dir / pki.BROKER_CERT),
        "EPNS_SERVER_HTTP__KEY": str(pki_dir / pki.BROKER_KEY),
        "EPNS_SERVER_HTTP__CLIENT_CA": str(pki_dir / pki.CA_CERT),
        "EPNS_SERVER_HTTP__PUBLIC_URL": f"https://127.0.0.1:{http_port}",
        "EPNS_SERVER_MQTT__HOST": "127.0.0.1",
        "EPNS_SERVER_MQTT__PORT": str(mqtt_port),
        "EPNS_SERVER_MQTT__CA": str(pki_dir / pki.CA_CERT),
        "EPNS_SERVER_MQTT__CERT": str(pki_dir / pki.SERVER_CERT),
        "EPNS_SERVER_MQTT__KEY": str(pki_dir / pki.SERVER_KEY),
        "EPNS_SERVER_MQTT__AGENT_HOST": "127.0.0.1",
        "EPNS_SERVER_MQTT__AGENT_PORTS": str(mqtt_port),
        "EPNS_SERVER_BROKER__ENABLED": "true" if embedded else "false",
        "EPNS_SERVER_PKI__DIR": str(pki_dir),
        "EPNS_SERVER_DATABASE__URL": database_url or f"sqlite+aiosqlite:///{work / 'server.db'}",
        "EPNS_SERVER_CONSOLE__SECRETS_FILE": str(work / "secrets.json"),
        "EPNS_SERVER_STATE_DIR": str(work),
        "EPNS_SERVER_WOL__ALLOWED_NETWORKS": "127.0.0.0/8",
        # The wake-up API's per-caller limit (60/min, burst 20) would pace the
        # stream of single wake-ups at one a second; lifted, as the bench is
        # one caller doing the work of many.
        "EPNS_SERVER_WAKEUPS__PER_MINUTE": "60000",
        "EPNS_SERVER_WAKEUPS__BURST": "1000",
    })
    if embedded:
        env.update({
            "EPNS_BROKER_LISTENERS__PRIMARY__HOST": "127.0.0.1",
            "EPNS_BROKER_LISTENERS__PRIMARY__PORT": str(mqtt_port),
            "EPNS_BROKER_LISTENERS__FALLBACK__ENABLED": "false",
            "EPNS_BROKER_TLS__CERT": str(pki_dir / pki.BROKER_CERT),
            "EPNS_BROKER_TLS__KEY": str(pki_dir / pki.BROKER_KEY),
            "EPNS_BROKER_TLS__CA": str(pki_dir / pki.CA_CERT),
            "EPNS_BROKER_IDENTITY__SERVER_PUBLIC_KEY": str(pki_dir / pki.SIGNING_PUB),
            "EPNS_BROKER_IDENTITY__REVOCATION_FILE": str(pki_dir / pki.REVOKED),
            "EPNS_BROKER_METRICS__HOST": "127.0.0.1",
            "EPNS_BROKER_METRICS__PORT": "0",
            # Connect admission (1000/s, burst 500) would refuse part of the
            # untimed connect phase; the wake-up path does not go through it.
            "EPNS_BROKER_LIMITS__CONNECT_RATE": "100000",
            "EPNS_BROKER_LIMITS__CONNECT_BURST": "100000",
        })
    return env


def start_server(pki_dir: Path, work: Path, mqtt_port: int, broker: Broker | None,
                 database_url: str | None = None) -> Server:
    """Start the server (with the embedded broker unless ``broker`` is given)
    and wait until it serves; find the broker's pid."""
    http_port = free_port()
    env = server_env(pki_dir, work, http_port, mqtt_port, embedded=broker is None,
                     database_url=database_url)
    log = work / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "server_push", "run"], cwd=ROOT,
                                   env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, r" ready url=", process, READY_TIMEOUT_S)
        if broker is None:
            wait_for_line(log, r"\[broker\] .* ready ports=primary:\d+", process,
                          READY_TIMEOUT_S)
            pids = children(process.pid)
            if len(pids) != 1:
                raise RuntimeError(f"expected one embedded broker child, found {pids}")
            broker_pid = pids[0]
        else:
            broker_pid = broker.pid
        wait_for_line(log, r"broker_link_up", process, READY_TIMEOUT_S)
    except RuntimeError:
        process.kill()
        process.wait()
        raise
    return Server(process, env, f"https://127.0.0.1:{http_port}", log, broker_pid)


def create_agents(server: Server, token: str, names: list[str], bundles: Path) -> float:
    """Create the agents through the API (the server issues their certificates);
    writes each bundle's certificate and key. Returns the seconds it took."""
    started = time.monotonic()
    with api_client(server, token) as api:
        for name in names:
            answer = api.post("/api/v1/agents", json={"id": name, "auth": "certificate"})
            if answer.status_code != 201:
                raise RuntimeError(f"creating {name}: {answer.status_code} {answer.text}")
            directory = bundles / name
            directory.mkdir(parents=True, exist_ok=True)
            files = answer.json()["files"]
            for part in ("agent.crt", "agent.key"):
                (directory / part).write_text(files[part])
    return time.monotonic() - started


def api_client(server: Server, token: str) -> httpx.Client:
    """An HTTP/1.1 keep-alive API client trusting the fleet CA."""
    ca = Path(server.env["EPNS_SERVER_HTTP__CLIENT_CA"])
    return httpx.Client(base_url=server.url, verify=str(ca), timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


class Agents(JsonLinesChild):
    """The simulated agents' process and its JSON lines: one ``sync`` line per
    command handled, kept in order; any other event kept by name."""

    def __init__(self, command: list[str], log: Path) -> None:
        super().__init__(command, log, None)
        self.events: dict[str, dict[str, Any]] = {}
        self.syncs: list[dict[str, Any]] = []
        # The storm's: one per agent back after a loss, with its sync.
        self.resyncs: list[dict[str, Any]] = []

    def pump(self, timeout: float) -> None:
        """Read what stdout has within ``timeout``; file it by event."""
        self.read(timeout)
        while self.pending:
            event = self.pending.popleft()
            if event["event"] == "sync":
                self.syncs.append(event)
            elif event["event"] == "resync":
                self.resyncs.append(event)
            else:
                self.events[event["event"]] = event

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Pump until event ``name`` arrived; bounded."""
        deadline = time.monotonic() + timeout
        while name not in self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"e2e_agents sent no {name!r} in {timeout:g} s")
            self.pump(min(1.0, max(0.0, deadline - time.monotonic())))
        return self.events[name]


# -- measuring -----------------------------------------------------------------

@dataclass
class CpuMeter:
    """CPU seconds of the processes under test, and of everything else."""

    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)
    began: float = 0.0
    processes: dict[int, tuple[str, float, float]] = field(default_factory=dict)
    uptime: float = 0.0

    def _read(self) -> dict[str, float]:
        values = {name: proc_cpu_seconds(pid) for name, pid in self.pids.items()}
        values["orchestrator"] = proc_cpu_seconds(os.getpid())
        busy, steal = system_cpu_seconds()
        values["others"] = busy - sum(values.values())
        values["steal"] = steal
        return values

    def begin(self, *, others: bool = False) -> None:
        """Start counting (and note every process's CPU, if ``others``)."""
        self.processes = every_process() if others else {}
        self.uptime = float(Path("/proc/uptime").read_text().split()[0])
        self.began, self.start = time.monotonic(), self._read()

    def end(self) -> dict[str, Any]:
        """CPU seconds used since ``begin``, per process, and the wall time;
        with ``others`` at begin, the busiest other processes too."""
        now = self._read()
        used: dict[str, Any] = {name: round(now[name] - self.start[name], 2) for name in now}
        used["wall"] = round(time.monotonic() - self.began, 2)
        if self.processes:
            ours = {*self.pids.values(), os.getpid()}
            later = every_process()
            before = self.processes
            # A process missing from ``before`` counts only if it started since.
            busiest = sorted(((cpu - (before[pid][1] if pid in before else 0.0), name)
                              for pid, (name, cpu, started) in later.items()
                              if pid not in ours and (pid in before or started >= self.uptime)),
                             reverse=True)[:5]
            used["busiest_others"] = [f"{name}: {cpu:.1f} s" for cpu, name in busiest]
        return used


def settle(meter: CpuMeter, idle_pct: float = 5.0) -> float:
    """Wait until the server and the broker are idle (each under ``idle_pct``
    of a core over one second), at most SETTLE_MAX_S; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_MAX_S:
        meter.begin()
        time.sleep(1.0)
        used = meter.end()
        if max(used["server"], used["broker"]) * 100 / used["wall"] < idle_pct:
            break
    return round(time.monotonic() - started, 1)


def quantiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 and max in milliseconds (nearest rank); None when empty."""
    none: dict[str, float | None] = dict.fromkeys(("p50", "p99", "max"))
    return {**none, **(percentiles_ms(values, (0.50, 0.99), digits=1) or {})}


def wakeup_view(api: httpx.Client, wakeup_id: str) -> dict[str, Any]:
    """``GET /api/v1/wakeups/<id>`` (with every target)."""
    answer = api.get(f"/api/v1/wakeups/{wakeup_id}")
    answer.raise_for_status()
    view: dict[str, Any] = answer.json()
    return view


def summarize(sent: dict[str, tuple[float, float]], targets: int,
              syncs: list[dict[str, Any]], views: dict[str, dict[str, Any]],
              cpu: dict[str, Any]) -> dict[str, Any]:
    """The figures of one phase. ``sent`` maps wake-up id -> (monotonic, wall)
    time the API call was sent; ``syncs`` are the agents' records."""
    received, post_sent, post_answered, satisfied = [], [], [], []
    busy = failed = 0
    for record in syncs:
        monotonic_sent = sent[record["wakeup"]][0]
        busy += record["retries"]
        received.append(record["received"] - monotonic_sent)
        if not record["ok"]:
            failed += 1
        if "post_answered" in record and record["ok"]:
            post_sent.append(record["post_sent"] - monotonic_sent)
            post_answered.append(record["post_answered"] - monotonic_sent)
    last_satisfied = None
    count_satisfied = 0
    for wakeup_id, view in views.items():
        wall_sent = sent[wakeup_id][1]
        for target in view["targets"]:
            if target["state"] == "satisfied":
                count_satisfied += 1
                satisfied.append(target["satisfied_at"] - wall_sent)
                last_satisfied = max(last_satisfied or 0.0, target["satisfied_at"])
    first_wall = min(wall for _, wall in sent.values())
    return {
        "targets": targets, "syncs": len(syncs), "syncs_failed": failed,
        "busy_answers": busy, "satisfied": count_satisfied,
        "time_to_all_satisfied_s": (round(last_satisfied - first_wall, 3)
                                    if last_satisfied is not None
                                    and count_satisfied == targets else None),
        "received_ms": quantiles(received), "post_sent_ms": quantiles(post_sent),
        "post_answered_ms": quantiles(post_answered),
        "satisfied_ms": quantiles(satisfied),
        "cpu_s": cpu,
        "cpu_ms_per_wakeup": {name: round(cpu[name] * 1000 / targets, 2)
                              for name in ("server", "broker", "agents")},
        "samples_post_sent_s": [round(v, 4) for v in post_sent],
    }


def wait_phase(agents: Agents, api: httpx.Client, wanted: dict[str, int],
               syncs: int) -> dict[str, dict[str, Any]]:
    """Until every wake-up in ``wanted`` (id -> targets) has as many satisfied
    targets and the agents reported ``syncs`` syncs in all (or PHASE_TIMEOUT_S):
    the views."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    total = sum(wanted.values())
    views: dict[str, dict[str, Any]] = {}
    satisfied: dict[str, int] = dict.fromkeys(wanted, 0)
    next_poll = 0.0
    synced_at: float | None = None
    while time.monotonic() < deadline:
        agents.pump(0.1)
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + POLL_INTERVAL_S
            for wakeup_id, count in wanted.items():
                if satisfied[wakeup_id] < count:
                    views[wakeup_id] = wakeup_view(api, wakeup_id)
                    satisfied[wakeup_id] = views[wakeup_id]["counts"].get("satisfied", 0)
        if len(agents.syncs) >= syncs:
            # Every sync is reported: done once all are satisfied, or a grace
            # period later (a failed sync satisfies nothing).
            synced_at = synced_at or time.monotonic()
            if (sum(satisfied.values()) >= total
                    or time.monotonic() - synced_at > SATISFY_GRACE_S):
                break
    return views


def phase_all(agents: Agents, api: httpx.Client, meter: CpuMeter, count: int
              ) -> dict[str, Any]:
    """(a) One wake-up of every agent."""
    first = len(agents.syncs)
    meter.begin(others=True)
    sent_at, wall = time.monotonic(), time.time()
    answer = api.post("/api/v1/wakeups", json={"all": True})
    answered = time.monotonic() - sent_at
    answer.raise_for_status()
    wakeup_id = answer.json()["id"]
    wait_phase(agents, api, {wakeup_id: count}, first + count)
    seen_done = time.monotonic() - sent_at
    time.sleep(1.0)  # the agents' trailing sync events
    agents.pump(0)
    cpu = meter.end()
    views = {wakeup_id: wakeup_view(api, wakeup_id)}
    syncs = [s for s in agents.syncs[first:] if s["wakeup"] == wakeup_id]
    result = summarize({wakeup_id: (sent_at, wall)}, count, syncs, views, cpu)
    result.update(api_call_ms=round(answered * 1000, 1),
                  polled_all_satisfied_s=round(seen_done, 2))
    return result


def phase_stream(agents: Agents, api: httpx.Client, meter: CpuMeter, names: list[str],
                 rate: float = STREAM_RATE) -> dict[str, Any]:
    """(b) One wake-up per agent in ``names``, at ``rate`` per second."""
    first = len(agents.syncs)
    sent: dict[str, tuple[float, float]] = {}
    meter.begin(others=True)
    began = time.monotonic()
    api_ms = []
    for index, name in enumerate(names):
        due = began + index / rate
        while (now := time.monotonic()) < due:
            agents.pump(min(0.05, due - now))
        sent_at, wall = time.monotonic(), time.time()
        answer = api.post("/api/v1/wakeups", json={"agents": [name]})
        api_ms.append(time.monotonic() - sent_at)
        answer.raise_for_status()
        sent[answer.json()["id"]] = (sent_at, wall)
    stream_s = time.monotonic() - began
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while len(agents.syncs) - first < len(names) and time.monotonic() < deadline:
        agents.pump(0.2)
    time.sleep(1.0)
    agents.pump(0)
    cpu = meter.end()
    wait_phase(agents, api, dict.fromkeys(sent, 1), 0)
    views = {wakeup_id: wakeup_view(api, wakeup_id) for wakeup_id in sent}
    syncs = [s for s in agents.syncs[first:] if s["wakeup"] in sent]
    result = summarize(sent, len(names), syncs, views, cpu)
    result.update(rate_asked=rate, rate_done=round(len(names) / stream_s, 2),
                  api_call_ms=quantiles(api_ms))
    return result


def phase_storm(agents: Agents, server: Server, external: Broker | None, count: int,
                restart: Any) -> dict[str, Any]:
    """(c) The broker killed under ``count`` connected agents: until every
    agent is back and has synced (or PHASE_TIMEOUT_S). ``restart`` starts
    Mosquitto again (None for the embedded broker, which the server
    restarts itself). The broker's CPU is left out: its process changes."""
    first = len(agents.resyncs)
    meter = CpuMeter({"server": server.process.pid, "agents": agents.process.pid})
    meter.begin(others=True)
    killed = time.monotonic()
    if external is None:
        os.kill(server.broker_pid, signal.SIGKILL)
    else:
        external.process.kill()
        external.process.wait()
        restart()
    deadline = killed + PHASE_TIMEOUT_S
    while len(agents.resyncs) - first < count and time.monotonic() < deadline:
        agents.pump(0.5)
    cpu = meter.end()
    records = agents.resyncs[first:]
    back = [r["back"] - killed for r in records if r.get("back") is not None]
    synced = [r["post_answered"] - killed for r in records
              if r["ok"] and r.get("post_answered") is not None]
    done = [r.get("get_answered", r.get("post_answered", 0.0)) - killed
            for r in records if r["ok"]]
    return {
        "agents": count, "back": len(back), "synced": len(synced),
        "syncs_failed": sum(1 for r in records if not r["ok"]),
        "busy_answers": sum(r.get("retries", 0) for r in records),
        "time_to_all_back_s": round(max(back), 2) if len(back) == count else None,
        "time_to_all_synced_s": round(max(done), 2) if len(synced) == count else None,
        "back_ms": quantiles(back), "synced_ms": quantiles(done),
        "errors": sorted({r["error"] for r in records if r.get("error")})[:10],
        "cpu_s": cpu,
        "cpu_ms_per_agent": {name: round(cpu[name] * 1000 / count, 2)
                             for name in ("server", "agents")},
    }


# -- one broker ----------------------------------------------------------------

def fresh_work(work: Path) -> Path:
    """An empty ``work`` with a new dev PKI in it (returned): a fresh server
    every time, as a database left by an earlier run already holds the agents."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pki_dir = work / "pki"
    pki.init_dev_pki(pki_dir, ("localhost", "127.0.0.1"))
    return pki_dir


def run_broker(kind: str, plan: Plan, work: Path) -> dict[str, Any]:
    """Server (+ broker), agents, both phases, teardown; the figures."""
    pki_dir = fresh_work(work)
    print(f"## {kind}: {plan.agents} agents", file=sys.stderr, flush=True)
    external: Broker | None = None
    server: Server | None = None
    agents: Agents | None = None
    code = code_identity("broker", "epns")
    database = contextlib.ExitStack()
    try:
        database_url = (database.enter_context(postgres.cluster(work / "postgres"))
                        if plan.database == "postgres" else None)
        if kind == "mosquitto":
            external = start_mosquitto(pki_dir, work, None, MOSQUITTO)
            mqtt_port = external.port
        else:
            mqtt_port = free_port()
        server = start_server(pki_dir, work, mqtt_port, external, database_url)
        token = server.cli("token", "create", "bench").strip()
        names = [f"bench-{i:05d}" for i in range(1, plan.agents + 1)]
        bundles = work / "agents"
        create_s = create_agents(server, token, names, bundles)
        print(f"created {len(names)} agents in {create_s:.1f} s", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "bench.e2e_agents", "--mqtt-port", str(mqtt_port),
                   "--http-port", server.url.rsplit(":", 1)[1], "--pki-dir", str(pki_dir),
                   "--bundles-dir", str(bundles), "--count", str(plan.agents),
                   "--http-concurrency", str(plan.http_concurrency),
                   "--reconnect-cap", str(RECONNECT_CAP_S),
                   "--max-run", str(6 * PHASE_TIMEOUT_S)]
        agents = Agents(command, work / "agents.log")
        agents.wait_event("prepared", 120)
        agents.send("go")
        connected = agents.wait_event("connected", CONNECT_TIMEOUT_S)
        if connected["ok"] != plan.agents:
            raise RuntimeError(f"only {connected['ok']} of {plan.agents} agents connected: "
                               f"{connected['errors']}")
        meter = CpuMeter({"server": server.process.pid, "broker": server.broker_pid,
                          "agents": agents.process.pid})
        settled = settle(meter)
        with api_client(server, token) as api:
            wake_all = phase_all(agents, api, meter, plan.agents)
            print(f"wake all: {wake_all['satisfied']}/{plan.agents} satisfied",
                  file=sys.stderr, flush=True)
            settle(meter)
            stream = phase_stream(agents, api, meter, names[-plan.stream:], plan.stream_rate)
            print(f"stream: {stream['satisfied']}/{plan.stream} satisfied",
                  file=sys.stderr, flush=True)
            storm: dict[str, Any] | None = None
            after_storm: dict[str, Any] | None = None
            if plan.storm:
                settle(meter)
                external_now = external

                def restart() -> None:
                    nonlocal external
                    assert external_now is not None
                    external = start_mosquitto(pki_dir, work, None, MOSQUITTO,
                                               port=external_now.port,
                                               log_name="mosquitto-restarted.log")

                storm = phase_storm(agents, server, external, plan.agents, restart)
                print(f"storm: {storm['synced']}/{plan.agents} back and synced",
                      file=sys.stderr, flush=True)
                if external is None:
                    server.broker_pid = children(server.process.pid)[0]
                meter = CpuMeter({"server": server.process.pid, "broker": server.broker_pid
                                  if external is None else external.pid,
                                  "agents": agents.process.pid})
                settle(meter)
                after_storm = phase_all(agents, api, meter, plan.agents)
                print(f"wake all after the storm: {after_storm['satisfied']}/{plan.agents} "
                      "satisfied", file=sys.stderr, flush=True)
        agents.send("stop")
        report = agents.wait_event("report", 60)
        return {"broker": kind, "code": code, "agents": plan.agents, "database": plan.database,
                "create_agents_s": round(create_s, 1), "settled_s": settled,
                "connect": connected, "wake_all": wake_all, "stream": stream,
                "storm": storm, "wake_all_after_storm": after_storm,
                "agents_report": report, "command": agents.command}
    finally:
        if agents is not None:
            agents.close()
        if server is not None:
            broker_pid = server.broker_pid
            stop_process(server.process)
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker_pid, 0)
                if external is None:  # an orphaned embedded broker
                    os.kill(broker_pid, signal.SIGKILL)
        if external is not None:
            external.stop()
        database.close()


# -- the suite's entry point -----------------------------------------------------

PHASES = (("wake_all", "wake all"), ("stream", "single wake-ups"))


def metrics_of(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The suite's metric rows: one per figure, a value per broker."""
    rows: list[dict[str, Any]] = []

    def add(name: str, unit: str, pick: Any) -> None:
        values = {}
        for broker, result in results.items():
            try:
                values[broker] = pick(result)
            except (KeyError, TypeError):
                values[broker] = None
        rows.append({"name": name, "unit": unit, "values": values, "target": None})

    for key, label in PHASES:
        for figure, words in (("received_ms", "API call -> command at the agent"),
                              ("post_sent_ms", "API call -> sync POST sent"),
                              ("post_answered_ms", "API call -> sync POST answered"),
                              ("satisfied_ms", "API call -> satisfied (server)")):
            for q in ("p50", "p99", "max"):
                add(f"{label}: {words} {q}", "ms",
                    lambda r, k=key, f=figure, q=q: r[k][f][q])
        add(f"{label}: API call answered" + (" p50" if key == "stream" else ""), "ms",
            lambda r, k=key: r[k]["api_call_ms"] if k == "wake_all" else r[k]["api_call_ms"]["p50"])
        add(f"{label}: time to all satisfied", "s",
            lambda r, k=key: r[k]["time_to_all_satisfied_s"])
        add(f"{label}: satisfied / targets", "ratio",
            lambda r, k=key: r[k]["satisfied"] / r[k]["targets"])
        add(f"{label}: 429/503 answers", "count", lambda r, k=key: r[k]["busy_answers"])
        add(f"{label}: failed syncs", "count", lambda r, k=key: r[k]["syncs_failed"])
        for who in ("server", "broker", "agents"):
            add(f"{label}: {who} CPU per wake-up", "ms",
                lambda r, k=key, w=who: r[k]["cpu_ms_per_wakeup"][w])
        add(f"{label}: other processes' CPU", "% of a core",
            lambda r, k=key: round(100 * r[k]["cpu_s"]["others"] / r[k]["cpu_s"]["wall"], 1))
    storm = "storm with sync"
    add(f"{storm}: time to all back", "s", lambda r: r["storm"]["time_to_all_back_s"])
    add(f"{storm}: time to all synced", "s", lambda r: r["storm"]["time_to_all_synced_s"])
    add(f"{storm}: synced / agents", "ratio", lambda r: r["storm"]["synced"] / r["agents"])
    add(f"{storm}: failed syncs", "count", lambda r: r["storm"]["syncs_failed"])
    add(f"{storm}: 429/503 answers", "count", lambda r: r["storm"]["busy_answers"])
    for who in ("server", "agents"):
        add(f"{storm}: {who} CPU per agent", "ms",
            lambda r, w=who: r["storm"]["cpu_ms_per_agent"][w])
    after = "wake all after the storm"
    add(f"{after}: time to all satisfied", "s",
        lambda r: r["wake_all_after_storm"]["time_to_all_satisfied_s"])
    add(f"{after}: satisfied / targets", "ratio",
        lambda r: r["wake_all_after_storm"]["satisfied"] / r["wake_all_after_storm"]["targets"])
    add(f"{after}: server CPU per wake-up", "ms",
        lambda r: r["wake_all_after_storm"]["cpu_ms_per_wakeup"]["server"])
    return rows


def run(*, brokers: list[str], quick: bool, work_dir: Path, pki_dir: Path,
        agents: int | None = None, stream_rate: float = STREAM_RATE, storm: bool = True,
        database: str = "sqlite") -> dict[str, Any]:
    """Scenario 6 for each broker. ``pki_dir`` (the suite's PKI) is not used:
    the agents' certificates come from each server's own PKI in ``work_dir``.
    ``samples`` are wake-all latencies API call -> sync POST sent (the attempt
    the server accepted), in seconds."""
    del pki_dir
    plan = plan_for(quick, agents, stream_rate=stream_rate, storm=storm, database=database)
    results = {kind: run_broker(kind, plan, work_dir / f"e2e-{kind}") for kind in brokers}
    command = "python -m bench end-to-end" + (" --quick" if quick else "") + (
        f" --agents {agents}" if agents else "") + " --brokers " + " ".join(brokers) + (
        f" --stream-rate {stream_rate:g}" if stream_rate != STREAM_RATE else "") + (
        "" if storm else " --no-storm") + (
        f" --database {database}" if database != "sqlite" else "")
    return {"scenario": "end_to_end", "command": command, "metrics": metrics_of(results),
            "samples": {kind: r["wake_all"]["samples_post_sent_s"]
                        for kind, r in results.items()},
            "details": results, "machine": machine_info(MOSQUITTO)}


# -- command line ------------------------------------------------------------------

def table(result: dict[str, Any], brokers: list[str]) -> Iterator[str]:
    """The markdown table: a column per broker, and epns/mosquitto."""
    both = brokers == ["epns", "mosquitto"]
    yield "| figure | " + " | ".join(brokers) + (" | epns / mosquitto |" if both else " |")
    yield "|---" * (len(brokers) + 1 + both) + "|"
    for row in result["metrics"]:
        values = [row["values"].get(b) for b in brokers]
        cells = ["-" if v is None else f"{v:g}" for v in values]
        if both:
            a, b = values
            cells.append(f"{a / b:.2f}" if a is not None and b else "-")
        yield f"| {row['name']} ({row['unit']}) | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench end-to-end``: run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 agents, 50 single wake-ups")
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    parser.add_argument("--agents", type=int, help="number of agents (default 1000)")
    parser.add_argument("--stream-rate", type=float, default=STREAM_RATE,
                        help=f"single wake-ups per second (default {STREAM_RATE:g})")
    parser.add_argument("--no-storm", action="store_true",
                        help="leave out the storm with sync (the broker restarted)")
    parser.add_argument("--database", choices=DATABASES, default="sqlite",
                        help="the server's database: its SQLite file, or a throwaway "
                             "PostgreSQL cluster (Debian's postgresql)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-e2e"))
    args = parser.parse_args(argv)
    if args.agents is not None and args.agents < 1:
        parser.error("--agents must be at least 1")
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)
    if args.stream_rate <= 0:
        parser.error("--stream-rate must be positive")
    result = run(brokers=args.brokers, quick=args.quick, work_dir=args.work_dir,
                 pki_dir=args.work_dir, agents=args.agents, stream_rate=args.stream_rate,
                 storm=not args.no_storm, database=args.database)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"end_to_end-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print("\n".join(table(result, args.brokers)))
    print(f"\nJSON: {out}")
    return 0

