"""N real agents woken at once: from the wake-up request to satisfied, per agent.

Scenario 6 (``python -m bench end-to-end``) simulates its agents on one event loop;
this one runs the real thing, on one machine: ``epns-server run`` (with its
embedded broker, or with Debian's Mosquitto running the shipped contract
config, as scenario 6 does), and N ``python -m agent_push run`` processes with
the HTTP sync (POST + GET over mTLS, ``sync.fetch = true``), agent defaults but
the addresses and PKI.

1. Create the N agents through the API (the server issues their certificates),
   start them, wait for each one's on-connect ``sync_done``, then for the
   server and the broker to be idle. None of this is timed.
2. One wake-up of all (``POST /api/v1/wakeups`` ``{"all": true}``), polled
   until every target is satisfied (bounded).
3. Per agent: ``satisfied_at - requested_at`` (the server's clock, as the
   wake-up API reports it); its RSS before the wake-up (VmRSS) and its peak
   since it started (VmHWM: the connect sync and the wake-up's sync included,
   in the agent's own process; a child it ran is not counted there); the
   CPU the agents used during the wake-up, their children's included.

The command line prints a markdown table (a column per broker) and writes JSON
to ``bench/results/wake-agents-<timestamp>.json``.

    python -m bench wake-agents                  # 20 agents, epns and Mosquitto
    python -m bench wake-agents --agents 1 --brokers epns
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, ROOT
from bench.agents import agent_command, agent_env, write_agent_config
from bench.brokers import MOSQUITTO, Broker, free_port, start_mosquitto
from bench.processes import stop_process
from bench.procfs import proc_cpu_seconds, proc_status
from bench.results_io import code_identity, command_line
from bench.scenarios.end_to_end import (
    CpuMeter,
    Server,
    api_client,
    create_agents,
    fresh_work,
    settle,
    start_server,
    wakeup_view,
)
from epns import pki

BROKERS = ("epns", "mosquitto")
# Every wait is bounded by one of these.
CONNECT_TIMEOUT_S = 120.0
SATISFY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2


def agent_config(path: Path, name: str, bundle: Path, pki_dir: Path, server: Server,
                 mqtt_port: int) -> Path:
    """agent.toml: the agent's defaults except the addresses, the PKI and a
    sync interval longer than the run (only the wake-up's sync is of interest)."""
    ca = str(pki_dir / pki.CA_CERT)
    return write_agent_config(path, path.parent / f"state-{name}", {
        "identity": {"agent_id": name, "cert": str(bundle / "agent.crt"),
                     "key": str(bundle / "agent.key")},
        "broker": {"host": "127.0.0.1", "ports": [mqtt_port], "ca": ca,
                   "server_public_key": str(pki_dir / pki.SIGNING_PUB)},
        "proxy": {"use_env": False},
        "sync": {"action": "http", "url": server.url, "fetch": True, "ca": ca,
                 "interval": 86400.0},
        "log": {"level": "info", "format": "text"},
    })


def start_agents(names: list[str], work: Path, pki_dir: Path, server: Server,
                 mqtt_port: int) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """The agent processes, each logging to its own file."""
    env = agent_env()
    running = {}
    for name in names:
        config = agent_config(work / f"{name}.toml", name, work / "agents" / name, pki_dir,
                              server, mqtt_port)
        log = work / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                agent_command(config),
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=out)
        running[name] = (process, log)
    return running


def wait_connect_syncs(agents: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> float:
    """Until every agent logged its on-connect ``sync_done``; the seconds it took."""
    started = time.monotonic()
    waiting = set(agents)
    while waiting and time.monotonic() - started < CONNECT_TIMEOUT_S:
        for name in list(waiting):
            process, log = agents[name]
            if process.poll() is not None:
                raise RuntimeError(f"agent {name} exited with {process.returncode}; see {log}")
            text = log.read_text(errors="replace")
            if " sync_done " in text and "reason=connect" in text:
                waiting.discard(name)
        time.sleep(0.2)
    if waiting:
        raise RuntimeError(f"no connect sync within {CONNECT_TIMEOUT_S:g} s: {sorted(waiting)}")
    return round(time.monotonic() - started, 1)


def _agents_cpu(agents: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> float:
    """CPU seconds of the agents so far, with those of the children they reaped."""
    return sum(proc_cpu_seconds(process.pid, reaped_children=True)
               for process, _ in agents.values())


def wake_all(api: Any, count: int) -> dict[str, Any]:
    """One wake-up of every agent, polled until all ``count`` targets are satisfied."""
    answer = api.post("/api/v1/wakeups", json={"all": True})
    answer.raise_for_status()
    wakeup_id = answer.json()["id"]
    deadline = time.monotonic() + SATISFY_TIMEOUT_S
    view = wakeup_view(api, wakeup_id)
    while view["counts"].get("satisfied", 0) < count and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        view = wakeup_view(api, wakeup_id)
    return view


def run_broker(kind: str, count: int, work: Path) -> dict[str, Any]:
    """Server (+ broker), the agents, one wake-up of all, teardown; the figures."""
    pki_dir = fresh_work(work)
    print(f"## {kind}: {count} agents", file=sys.stderr, flush=True)
    external: Broker | None = None
    server: Server | None = None
    agents: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        if kind == "mosquitto":
            external = start_mosquitto(pki_dir, work, None, MOSQUITTO)
            mqtt_port = external.port
        else:
            mqtt_port = free_port()
        server = start_server(pki_dir, work, mqtt_port, external)
        token = server.cli("token", "create", "bench").strip()
        names = [f"wake-{i:03d}" for i in range(1, count + 1)]
        create_agents(server, token, names, work / "agents")
        agents = start_agents(names, work, pki_dir, server, mqtt_port)
        connect_s = wait_connect_syncs(agents)
        meter = CpuMeter({"server": server.process.pid, "broker": server.broker_pid})
        settled = settle(meter)
        rss_before = {name: proc_status(p.pid)["rss_kib"] for name, (p, _) in agents.items()}
        agents_cpu = _agents_cpu(agents)
        with api_client(server, token) as api:
            meter.begin(others=True)
            view = wake_all(api, count)
            cpu = meter.end()
        time.sleep(1.0)  # the agents' trailing sync reports
        cpu["agents"] = round(_agents_cpu(agents) - agents_cpu, 2)
        after = {name: proc_status(p.pid) for name, (p, _) in agents.items()}
        return summary(kind, view, rss_before, after, connect_s=connect_s, settled_s=settled,
                       cpu=cpu)
    finally:
        for process, _ in agents.values():
            stop_process(process)
        if server is not None:
            broker_pid = server.broker_pid
            stop_process(server.process)
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker_pid, 0)
                if external is None:  # an orphaned embedded broker
                    os.kill(broker_pid, signal.SIGKILL)
        if external is not None:
            external.stop()


def summary(kind: str, view: dict[str, Any], rss_before: dict[str, int],
            after: dict[str, dict[str, int]], **context: Any) -> dict[str, Any]:
    """Per-agent seconds to satisfied and memory, with their median and max."""
    took = {t["agent_id"]: round(t["satisfied_at"] - t["requested_at"], 3)
            for t in view["targets"] if t["state"] == "satisfied"}
    values = list(took.values())
    hwm = [status["hwm_kib"] / 1024 for status in after.values()]
    idle = [kib / 1024 for kib in rss_before.values()]
    return {
        "broker": kind, "code": code_identity("broker", "epns"), "targets": len(view["targets"]),
        "satisfied": len(values), "counts": view["counts"],
        "satisfied_s": {"median": round(statistics.median(values), 3) if values else None,
                        "max": max(values) if values else None, "per_agent": took},
        "agent_rss_before_wake_mib": {"median": round(statistics.median(idle), 1),
                                      "max": round(max(idle), 1)},
        "agent_vmhwm_mib": {"median": round(statistics.median(hwm), 1),
                            "max": round(max(hwm), 1)},
        "agent_threads": sorted({status["threads"] for status in after.values()}),
        **context,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """A column per broker."""
    rows = [
        ("targets satisfied", lambda r: f"{r['satisfied']} / {r['targets']}"),
        ("request to satisfied, median (s)", lambda r: r["satisfied_s"]["median"]),
        ("request to satisfied, max (s)", lambda r: r["satisfied_s"]["max"]),
        ("agent RSS before the wake-up, median / max (MiB)",
         lambda r: "{median} / {max}".format(**r["agent_rss_before_wake_mib"])),
        ("agent peak RSS since start (VmHWM), median / max (MiB)",
         lambda r: "{median} / {max}".format(**r["agent_vmhwm_mib"])),
        ("CPU during the wake-up: server / broker / agents (s)",
         lambda r: f"{r['cpu']['server']} / {r['cpu']['broker']} / {r['cpu']['agents']}"),
        ("CPU of all other processes meanwhile, agents included (s)",
         lambda r: r["cpu"]["others"]),
    ]
    lines = ["| figure | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for name, pick in rows:
        cells = []
        for result in results.values():
            try:
                cells.append(str(pick(result)))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench wake-agents``: each broker in turn, print the table,
    write the JSON."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-wake"))
    args = parser.parse_args(argv)
    results = {}
    for kind in args.brokers:
        try:
            results[kind] = run_broker(kind, args.agents, args.work_dir / kind)
        except (RuntimeError, OSError) as exc:
            results[kind] = {"broker": kind, "error": f"{type(exc).__name__}: {exc}"}
            print(f"{kind} FAILED: {results[kind]['error']}", file=sys.stderr, flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"wake-agents-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"command": command_line(), "results": results}, indent=1))
    print(table(results))
    print(f"\nJSON: {out}")
    return 0

