"""One port: does a long-lived MQTT connection on 443 cost what it costs on 8883?

Issue 13, item 3. The broker's ``fallback`` listener (443 in production) is a
one-port listener: after the TLS handshake a ``FrontDoor`` protocol tells MQTT
(ALPN ``mqtt``, or no ALPN and first byte 0x10) from HTTPS, then hands the
connection to the same ``MQTTConnection`` as on the ``primary`` listener
(8883). This measures, in one run, N held agents on each way in:

- ``primary``: the primary listener, plain MQTT/TLS (8883's role);
- ``alpn``: the one-port listener, agents offering ALPN ``mqtt``;
- ``no_alpn``: the one-port listener, no ALPN (told apart by the first byte);
- ``mosquitto``: Mosquitto's 8883 listener (as ``bench.brokers`` starts it), the
  reference row.

Every epns run starts a fresh broker with both listeners open on free loopback
ports (the same configuration each time; the fallback with its defaults: HTTPS
relayed to a front socket, MQTT over WebSocket at ``/mqtt``); only the port the
agents dial and the ALPN they offer change. Each run is the hold of
``python -m bench hold``: broker pinned to CPU 0, the load generator on CPU 1 (one client
certificate per agent, CONNECT, SUBSCRIBE to the command and the fan-out topic
as a real agent), 2 s settle, 3 s idle baseline, connect (200 in flight), 1 s,
hold; CPU and RSS from /proc. The rows are repeated ``--rounds`` times, the
order rotated each round; the table gives each figure's median over the
rounds, and ratios one-port / primary.

    python -m bench one-port --quick   # N = 500, 1 round, about 1 min
    python -m bench one-port           # N = 2,000, 3 rounds, about 6 min

Loopback only; never port 443 or 8883; every wait is bounded, every process
stopped at the end. Results: ``bench/results/one-port-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import hold_phases
from bench.bench_pki import DEFAULT_DIR, ensure_bench_pki
from bench.brokers import MOSQUITTO, log_summary, scrape_epns_metrics, start_epns, start_mosquitto
from bench.fleet import MAX_PER_PROCESS
from bench.hold_phases import SETTLE_S, cpu_pct, rss_per_connection
from bench.processes import JsonLinesChild, can_pin, raise_nofile_limit
from bench.procfs import Sample, others_pct, proc_status
from bench.results_io import (
    code_identity,
    fmt,
    machine_line,
    mib,
    ratio,
    run_record,
    save_and_print,
)

# Ports this benchmark must never take or dial: the real ones.
REAL_PORTS = (443, 8883)


@dataclass(frozen=True)
class Way:
    """One way in: which broker, which of its listeners, what the agents offer."""

    name: str
    label: str
    broker: str  # "epns" or "mosquitto"
    listener: str  # the epns listener the agents dial
    alpn: tuple[str, ...] = ()


WAYS = (
    Way("primary", "epns primary (8883 role)", "epns", "primary"),
    Way("alpn", "epns one port, ALPN mqtt (443 role)", "epns", "fallback", ("mqtt",)),
    Way("no_alpn", "epns one port, no ALPN (443 role)", "epns", "fallback"),
    Way("mosquitto", "Mosquitto 8883", "mosquitto", "8883"),
)


def loadgen_command(port: int, count: int, way: Way, args: argparse.Namespace) -> list[str]:
    """The load generator for one run: agents that subscribe as a real agent
    does (command and fan-out topics) and offer ``way``'s ALPN."""
    command = [sys.executable, "-m", "bench.loadgen", "--port", str(port),
               "--pki-dir", str(args.pki_dir), "--count", str(count),
               "--concurrency", str(args.concurrency), "--phase-timeout",
               str(args.phase_timeout), "--agent-timeout", str(args.agent_timeout),
               # The orchestrator ends the hold first; this is only a cap.
               "--hold", str(SETTLE_S + args.hold + 60), "--wait-go", "--fanout"]
    for protocol in way.alpn:
        command += ["--alpn", protocol]
    return command


def run_one(way: Way, round_no: int, args: argparse.Namespace, work_root: Path,
            pin: bool) -> dict[str, Any]:
    """A fresh broker, N agents in by ``way``, hold, measure, stop."""
    count = args.count
    work = work_root / f"{round_no}-{way.name}"
    work.mkdir(parents=True)
    broker_cpu, loadgen_cpu = (0, 1) if pin else (None, None)
    result: dict[str, Any] = {"way": way.name, "round": round_no, "n": count,
                              "code": code_identity("broker", "epns")}
    try:
        if way.broker == "epns":
            broker = start_epns(args.pki_dir, work, broker_cpu, one_port=True)
            port, ports = broker.ports[way.listener], broker.ports
        else:
            broker = start_mosquitto(args.pki_dir, work, broker_cpu, args.mosquitto)
            port, ports = broker.port, {way.listener: broker.port}
    except RuntimeError as exc:
        result["error"] = f"broker did not start: {exc}"
        return result
    result.update({"port": port, "ports": ports, "broker_log": str(broker.log)})
    loadgen: JsonLinesChild | None = None
    try:
        if port in REAL_PORTS:
            raise RuntimeError(f"the broker took port {port}; this benchmark keeps off it")
        empty_a, empty_b = hold_phases.idle_baseline(broker.pid)
        command = loadgen_command(port, count, way, args)
        result["loadgen_command"] = " ".join(command)
        loadgen = JsonLinesChild(command, work / "loadgen.log", loadgen_cpu)
        loadgen.wait_event("prepared", timeout=300)
        before = Sample.take(broker.pid, loadgen.pid)
        loadgen.send("go")
        loadgen.wait_event(
            "connected", timeout=args.phase_timeout + args.agent_timeout + 60)
        after = Sample.take(broker.pid, loadgen.pid)
        hold_a, hold_b = hold_phases.hold(broker.pid, [loadgen.pid], args.hold)
        if broker.metrics_port is not None:
            # Which listener the connections are on, from the broker itself.
            result["broker_metrics"] = scrape_epns_metrics(broker.metrics_port)
        result["rss_hwm_kib"] = proc_status(broker.pid)["hwm_kib"]
        loadgen.terminate()  # end the hold: DISCONNECT everyone, report
        report = loadgen.wait_event("report", timeout=60)
        ok = report["ok"]
        connect_cpu = after.cpu_s - before.cpu_s
        result.update({
            "ok": ok, "failed": report["failed"], "errors": report["errors"],
            "all_connected": report["time_to_connect_all_s"] is not None,
            "time_to_connect_s": report["time_to_connect_all_s"]
            or report["time_to_last_success_s"],
            "broker_connect_cpu_s": round(connect_cpu, 3),
            "broker_cpu_ms_per_connect": round(1000 * connect_cpu / ok, 3) if ok else None,
            "connects_per_broker_cpu_s": round(ok / connect_cpu, 1) if connect_cpu else None,
            "latency_ms": report["latency_ms"],
            "tls_versions": report["tls_versions"],
            "alpn_selected": report["alpn_selected"],
            "rss_before_kib": before.rss_kib,
            "rss_held_kib": hold_b.rss_kib,
            "rss_per_connection_kib": rss_per_connection(before, hold_b, ok),
            "idle_cpu_pct_no_clients": cpu_pct(empty_a, empty_b),
            "hold_s": round(hold_b.at - hold_a.at, 2),
            "idle_cpu_pct_hold": cpu_pct(hold_a, hold_b),
            "hold_lost": report["hold"]["lost"],
            "others_cpu_pct_connect": others_pct(before, after),
            "others_cpu_pct_hold": others_pct(hold_a, hold_b),
            "loadgen_connect_cpu_s": report["cpu_s"]["connect"],
        })
        loadgen.process.wait(timeout=60)
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if loadgen is not None:
            loadgen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                loadgen.process.wait(timeout=30)
            loadgen.close()
        result["broker_stop"] = broker.stop()
        result["broker_log_summary"] = log_summary(broker)
    return result


# -- report -------------------------------------------------------------------

def median(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> Any:
    """The median of a figure over the runs that have it, None if none has."""
    values = [v for v in (get(r) for r in runs) if isinstance(v, int | float)]
    return statistics.median(values) if values else None


def on_listener(run: dict[str, Any]) -> str:
    """Connections the epns broker counted on each listener while held."""
    metrics = run.get("broker_metrics") or {}
    counts = [f"{m.group(1)} {int(v):,}" for name, v in metrics.items()
              if (m := re.fullmatch(r'epns_broker_connections\{listener="(\w+)"\}', name))
              and v]
    return ", ".join(counts) or "n/a"


def markdown(data: dict[str, Any]) -> str:
    """Median per way over the rounds, ratios one-port / primary; then each round."""
    by_way = {way.name: [r for r in data["runs"] if r["way"] == way.name and "error" not in r]
              for way in WAYS}
    count = data["settings"]["n"]
    # (label, getter, decimals, how the rounds combine: median, or a text of the first)
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], int, bool]] = [
        ("agents connected (worst round) / N", lambda r: r.get("ok"), 0, False),
        ("ALPN negotiated", lambda r: ", ".join(
            f"{k} {v:,}" for k, v in (r.get("alpn_selected") or {}).items()), 0, False),
        ("held on listener (broker metric)", on_listener, 0, False),
        ("time to connect + subscribe all N, s", lambda r: r.get("time_to_connect_s"), 2, True),
        ("broker CPU per connect + subscribe, ms",
         lambda r: r.get("broker_cpu_ms_per_connect"), 3, True),
        ("connects + subscribes per broker CPU-second",
         lambda r: r.get("connects_per_broker_cpu_s"), 0, True),
        ("agent connect + subscribe latency p50, ms",
         lambda r: (r.get("latency_ms") or {}).get("p50"), 1, True),
        ("agent connect + subscribe latency p99, ms",
         lambda r: (r.get("latency_ms") or {}).get("p99"), 1, True),
        ("broker RSS before the agents, MiB", lambda r: mib(r.get("rss_before_kib")), 1, True),
        ("broker RSS with N held, MiB", lambda r: mib(r.get("rss_held_kib")), 1, True),
        ("broker RSS per connection, KiB", lambda r: r.get("rss_per_connection_kib"), 2, True),
        (f"broker idle CPU over the {data['settings']['hold_s']:g} s hold, % of a core",
         lambda r: r.get("idle_cpu_pct_hold"), 2, True),
        ("connections lost during the hold (all rounds)", lambda r: r.get("hold_lost"), 0,
         False),
        ("other processes' CPU during connect (noise), % of a core",
         lambda r: r.get("others_cpu_pct_connect"), 1, True),
        ("other processes' CPU during hold (noise), % of a core",
         lambda r: r.get("others_cpu_pct_hold"), 1, True),
    ]
    labels = [way.label for way in WAYS]
    header = ["metric", *labels, "ALPN / primary", "no ALPN / primary"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get, digits, numeric in rows:
        cells = [label]
        values: dict[str, Any] = {}
        for way in WAYS:
            runs = by_way[way.name]
            if numeric:
                values[way.name] = median(runs, get)
                cells.append(fmt(values[way.name], digits))
            elif label.startswith("agents connected"):
                worst = min((r["ok"] for r in runs), default=None)
                cells.append(f"{fmt(worst)} / {count:,}")
            elif label.startswith("connections lost"):
                cells.append(fmt(sum(r.get("hold_lost") or 0 for r in runs)))
            else:
                cells.append(" / ".join(sorted({str(get(r)) for r in runs})) or "n/a")
        noise = label.startswith("other processes")
        for one_port in ("alpn", "no_alpn"):
            cells.append(ratio(values.get(one_port), values.get("primary"))
                         if numeric and not noise else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each round (broker CPU per connect + subscribe, ms / RSS per connection, "
              "KiB / idle CPU over the hold, %; in the order run):", ""]
    lines.append("| round | order | " + " | ".join(labels) + " |")
    lines.append("|" + "---|" * (len(labels) + 2))
    for round_no in range(data["settings"]["rounds"]):
        runs = [r for r in data["runs"] if r["round"] == round_no]
        order = ", ".join(r["way"] for r in runs)
        cells = [str(round_no + 1), order]
        for way in WAYS:
            run: dict[str, Any] = next((r for r in runs if r["way"] == way.name), {})
            if "error" in run or not run:
                cells.append(f"failed: {run.get('error', 'not run')}"[:80])
                continue
            cells.append(f"{fmt(run.get('broker_cpu_ms_per_connect'), 3)} / "
                         f"{fmt(run.get('rss_per_connection_kib'), 2)} / "
                         f"{fmt(run.get('idle_cpu_pct_hold'), 2)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench one-port``; exit status 0 when every run completed."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="N = 500, 1 round, 5 s hold (unless given)")
    parser.add_argument("--count", type=int, help="agents per run (default 2,000; quick 500)")
    parser.add_argument("--rounds", type=int, help="repeats of every way (default 3; quick 1)")
    parser.add_argument("--hold", type=float, help="idle hold, seconds (default 10; quick 5)")
    parser.add_argument("--ways", nargs="+", choices=[w.name for w in WAYS],
                        default=[w.name for w in WAYS], help="which rows to run")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--phase-timeout", type=float, default=180.0,
                        help="cap on each connect phase, seconds")
    parser.add_argument("--agent-timeout", type=float, default=30.0)
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin broker and load generator to separate CPUs")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-work"))
    parser.add_argument("--mosquitto", default=MOSQUITTO)
    args = parser.parse_args(argv)
    args.count = args.count or (500 if args.quick else 2_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.hold = args.hold if args.hold is not None else (5.0 if args.quick else 10.0)
    if not 1 <= args.count <= MAX_PER_PROCESS:
        parser.error(f"--count must be 1 to {MAX_PER_PROCESS:,} (one load-generator process)")
    ways = [w for w in WAYS if w.name in args.ways]

    raise_nofile_limit()
    pin = can_pin(args.pin)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_root = args.work_dir / f"one-port-{stamp}"
    work_root.mkdir(parents=True)
    print(f"PKI: {ensure_bench_pki(args.pki_dir, args.count)} in {args.pki_dir}",
          file=sys.stderr, flush=True)
    data: dict[str, Any] = {
        **run_record(args.mosquitto),
        "settings": {
            "n": args.count, "rounds": args.rounds, "hold_s": args.hold,
            "ways": [w.name for w in ways], "concurrency": args.concurrency,
            "phase_timeout_s": args.phase_timeout, "agent_timeout_s": args.agent_timeout,
            "pinned": "broker on CPU 0, loadgen on CPU 1" if pin else "no",
            "epns_admission": "connect_rate=100000 connect_burst=100000 (as the hold command)",
            "work_dir": str(work_root),
        },
        "runs": [],
    }
    for round_no in range(args.rounds):
        # Rotated each round, so no way always runs first or after the same one.
        shift = round_no % len(ways)
        for way in ways[shift:] + ways[:shift]:
            print(f"## round {round_no + 1}/{args.rounds}: {way.label}, N={args.count:,}",
                  file=sys.stderr, flush=True)
            run = run_one(way, round_no, args, work_root, pin)
            print(f"   {run.get('error') or 'ok'}: {run.get('broker_cpu_ms_per_connect')} ms "
                  f"per connect, {run.get('rss_per_connection_kib')} KiB per connection",
                  file=sys.stderr, flush=True)
            data["runs"].append(run)
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_and_print(data, f"one-port-{stamp}", markdown(data))
    machine = data["machine"]
    changed = machine["uncommitted_broker_changes"]
    print(f"\nMachine (README format): {machine_line(machine)}; uncommitted changes in the "
          f"tree: {'yes' if machine['dirty'] else 'no'}"
          + (f" (under broker/, epns/, agent_push/: {len(changed)} files)" if changed else ""))
    return 1 if any("error" in r for r in data["runs"]) else 0

