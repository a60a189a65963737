"""Hold benchmark: N idle agents on the epns broker and on Mosquitto.

For each broker and each fleet size N, start the broker as its own process on
a free loopback port, start the load generator (``python -m bench.loadgen``)
as another, connect N agents
(TLS with a client certificate each, CONNECT, SUBSCRIBE), hold them idle, and
measure the broker process from /proc:

- RSS before the agents and after N connected -> KiB per connection;
- broker CPU (utime + stime) during the connect phase -> connects+subscribes
  per broker CPU-second;
- wall time until the last agent had its SUBACK;
- broker CPU % while the N connections sit idle.

Then ``t(large N) / t(small N)`` per broker (linear scaling = the ratio of the
sizes). Results go to ``bench/results/hold-<timestamp>.json`` and a markdown
table is printed.

    python -m bench hold            # N = 2000, 10000
    python -m bench hold --quick    # N = 500, 2000

Everything runs on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import hold_phases
from bench.bench_pki import DEFAULT_DIR, ensure_bench_pki
from bench.brokers import (
    MOSQUITTO,
    Broker,
    log_summary,
    scrape_epns_metrics,
    start_epns,
    start_mosquitto,
)
from bench.hold_phases import SETTLE_S, cpu_pct, rss_per_connection
from bench.processes import JsonLinesChild, can_pin, raise_nofile_limit
from bench.procfs import Sample, others_pct, proc_status, steal_pct, tcp_counters
from bench.results_io import (
    code_identity,
    fmt,
    mib,
    ratio,
    run_record,
    save_and_print,
)


class LoadGen(JsonLinesChild):
    """The load generator process for one hold run."""

    def __init__(self, broker: Broker, count: int, args: argparse.Namespace, work: Path,
                 cpu: int | None) -> None:
        hold_cap = SETTLE_S + args.hold + 60  # the orchestrator ends the hold first
        command = [sys.executable, "-m", "bench.loadgen", "--port", str(broker.port),
                   "--pki-dir", str(args.pki_dir), "--count", str(count),
                   "--concurrency", str(args.concurrency),
                   "--phase-timeout", str(args.phase_timeout),
                   "--agent-timeout", str(args.agent_timeout),
                   "--hold", str(hold_cap), "--wait-go"]
        if args.tls12:
            command += ["--tls-max", "1.2"]
        super().__init__(command, work / f"loadgen-{broker.kind}-{count}.log", cpu)

    def go(self) -> None:
        """Start the connect phase."""
        self.send("go")

    def end_hold(self) -> None:
        """SIGTERM: stop holding, DISCONNECT everyone, report."""
        self.terminate()


# -- one run -----------------------------------------------------------------

def run_one(kind: str, count: int, args: argparse.Namespace, work_root: Path) -> dict[str, Any]:
    """Start a broker, connect ``count`` agents, hold, measure, stop."""
    work = work_root / f"{kind}-{count}"
    work.mkdir(parents=True)
    broker_cpu, loadgen_cpu = (0, 1) if can_pin(args.pin) else (None, None)
    print(f"## {kind}, N={count}", file=sys.stderr, flush=True)
    code = code_identity("broker", "epns")
    try:
        if kind == "epns":
            broker = start_epns(args.pki_dir, work, broker_cpu)
        else:
            broker = start_mosquitto(args.pki_dir, work, broker_cpu, args.mosquitto)
    except RuntimeError as exc:
        print(f"   FAILED to start: {exc}", file=sys.stderr, flush=True)
        return {"broker": kind, "n": count, "error": f"broker did not start: {exc}"}
    result: dict[str, Any] = {"broker": kind, "n": count, "code": code, "port": broker.port,
                              "broker_pid": broker.pid, "notes": broker.notes,
                              "broker_log": str(broker.log)}
    loadgen: LoadGen | None = None
    try:
        empty_a, empty_b = hold_phases.idle_baseline(broker.pid)
        result["idle_cpu_pct_no_clients"] = cpu_pct(empty_a, empty_b)
        result["others_cpu_pct_no_clients"] = others_pct(empty_a, empty_b)

        loadgen = LoadGen(broker, count, args, work, loadgen_cpu)
        result["loadgen_command"] = " ".join(loadgen.command)
        result["loadgen_log"] = str(loadgen.log)
        loadgen.wait_event("prepared", timeout=300)
        before = Sample.take(broker.pid, loadgen.process.pid)
        tcp_before = tcp_counters()
        loadgen.go()
        connected = loadgen.wait_event(
            "connected", timeout=args.phase_timeout + args.agent_timeout + 60)
        after_connect = Sample.take(broker.pid, loadgen.process.pid)
        tcp_after = tcp_counters()
        result["tcp_during_connect"] = {k: tcp_after[k] - tcp_before.get(k, 0)
                                        for k in tcp_after}
        print(f"   connected {connected['ok']}/{count} in {connected['connect_phase_s']} s",
              file=sys.stderr, flush=True)

        hold_a, hold_b = hold_phases.hold(broker.pid, [loadgen.pid], args.hold)
        status = proc_status(broker.pid)
        if broker.kind == "epns" and broker.metrics_port is not None:
            try:
                result["broker_metrics"] = scrape_epns_metrics(broker.metrics_port)
            except OSError as exc:
                result["broker_metrics"] = {"error": str(exc)}

        loadgen.end_hold()
        report = loadgen.wait_event("report", timeout=60)
        ok = report["ok"]
        connect_cpu = after_connect.cpu_s - before.cpu_s
        connect_time = report["time_to_connect_all_s"] or report["time_to_last_success_s"]
        result.update({
            "ok": ok,
            "failed": report["failed"],
            "errors": report["errors"],
            "all_connected": report["time_to_connect_all_s"] is not None,
            "time_to_connect_s": connect_time,
            "connect_phase_s": report["connect_phase_s"],
            "connects_per_wall_s": round(ok / connect_time, 1) if connect_time else None,
            "broker_connect_cpu_s": round(connect_cpu, 2),
            "connects_per_broker_cpu_s": round(ok / connect_cpu, 1) if connect_cpu else None,
            "broker_cpu_pct_during_connect": round(
                100 * connect_cpu / (after_connect.at - before.at), 1),
            "latency_ms": report["latency_ms"],
            "tls_handshake_ms": report["tls_handshake_ms"],
            "tls_versions": report["tls_versions"],
            "rss_before_kib": before.rss_kib,
            "rss_connected_kib": after_connect.rss_kib,
            "rss_after_hold_kib": hold_b.rss_kib,
            "rss_hwm_kib": status["hwm_kib"],
            "broker_threads": status["threads"],
            "rss_per_connection_kib": rss_per_connection(before, hold_b, ok),
            "hold_s": round(hold_b.at - hold_a.at, 2),
            "idle_cpu_pct_hold": cpu_pct(hold_a, hold_b),
            "others_cpu_pct_connect": others_pct(before, after_connect),
            "others_cpu_pct_hold": others_pct(hold_a, hold_b),
            "steal_pct_connect": steal_pct(before, after_connect),
            "hold_open_at_end": report["hold"]["open_at_end"],
            "hold_lost": report["hold"]["lost"],
            "hold_lost_reasons": report["hold"]["lost_reasons"],
            "loadgen_cpu_s": report["cpu_s"],
            "loadgen_max_rss_kib": report["max_rss_kib"],
            "loadgen_teardown": report["teardown"],
        })
        loadgen.process.wait(timeout=60)
        result["loadgen_exit_code"] = loadgen.process.returncode
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"   FAILED: {result['error']}", file=sys.stderr, flush=True)
    finally:
        if loadgen is not None:
            loadgen.end_hold()
            with contextlib.suppress(subprocess.TimeoutExpired):
                loadgen.process.wait(timeout=30)
            loadgen.close()
        broker_alive = broker.process.poll() is None
        result["broker_alive_at_end"] = broker_alive
        result["broker_stop"] = broker.stop()
        result["broker_log_summary"] = log_summary(broker)
    return result


# -- report -------------------------------------------------------------------

def markdown(data: dict[str, Any]) -> str:
    """The results as a markdown table: both brokers side by side per N."""
    runs = {(r["broker"], r["n"]): r for r in data["runs"]}
    sizes = data["settings"]["sizes"]
    kinds = data["settings"]["brokers"]
    # (label, value getter, decimals, whether an epns/mosquitto ratio means anything)
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], int, bool]] = [
        ("agents connected (ok / N)", lambda r: f"{fmt(r.get('ok'))} / {fmt(r['n'])}", 0,
         False),
        ("time to connect all N (s)", lambda r: r.get("time_to_connect_s")
         if r.get("all_connected") else f"not all: {fmt(r.get('time_to_connect_s'), 2)}", 2,
         True),
        ("connects+subscribes per wall second", lambda r: r.get("connects_per_wall_s"), 0, True),
        ("broker CPU during connect phase (s)", lambda r: r.get("broker_connect_cpu_s"), 2, True),
        ("connects+subscribes per broker CPU-second",
         lambda r: r.get("connects_per_broker_cpu_s"), 0, True),
        ("broker CPU % during connect phase", lambda r: r.get("broker_cpu_pct_during_connect"),
         0, True),
        ("agent connect+subscribe latency p50 (ms)",
         lambda r: (r.get("latency_ms") or {}).get("p50"), 0, True),
        ("agent connect+subscribe latency p99 (ms)",
         lambda r: (r.get("latency_ms") or {}).get("p99"), 0, True),
        ("accept-queue overflows during connect (SYN retried after 1 s)",
         lambda r: (r.get("tcp_during_connect") or {}).get("ListenOverflows"), 0, False),
        ("broker RSS before agents (MiB)", lambda r: mib(r.get("rss_before_kib")), 1, True),
        ("broker RSS with N connected (MiB)", lambda r: mib(r.get("rss_after_hold_kib")), 1,
         True),
        ("broker RSS per connection (KiB)", lambda r: r.get("rss_per_connection_kib"), 1, True),
        ("broker idle CPU %, no clients", lambda r: r.get("idle_cpu_pct_no_clients"), 2, False),
        ("broker idle CPU %, N connected (hold)", lambda r: r.get("idle_cpu_pct_hold"), 2, True),
        ("connections lost during hold", lambda r: r.get("hold_lost"), 0, False),
        ("other processes' CPU % during connect (noise)",
         lambda r: r.get("others_cpu_pct_connect"), 1, False),
        ("hypervisor steal % during connect (noise)", lambda r: r.get("steal_pct_connect"), 1,
         False),
        ("other processes' CPU % during hold (noise)", lambda r: r.get("others_cpu_pct_hold"), 1,
         False),
        ("loadgen CPU during connect phase (s)",
         lambda r: (r.get("loadgen_cpu_s") or {}).get("connect"), 2, True),
        ("broker stop on SIGTERM (s)", lambda r: (r.get("broker_stop") or {}).get("seconds"), 2,
         True),
    ]
    header = ["metric"]
    for n in sizes:
        header += [f"{kind} N={n:,}" for kind in kinds]
        if len(kinds) == 2:
            header.append(f"{kinds[0]}/{kinds[1]} N={n:,}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get, digits, comparable in rows:
        cells = [label]
        for n in sizes:
            values = [get(runs[(k, n)]) if (k, n) in runs else None for k in kinds]
            cells += [fmt(v, digits) for v in values]
            if len(kinds) == 2:
                cells.append(ratio(values[0], values[1]) if comparable else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    small, large = sizes[0], sizes[-1]
    lines.append(f"Scaling, t(N={large:,}) / t(N={small:,}) (linear = {large / small:.3g}):")
    lines.append("")
    lines.append("| broker | connect wall time ratio | broker connect CPU ratio |")
    lines.append("|---|---|---|")
    for kind in kinds:
        a, b = runs.get((kind, small), {}), runs.get((kind, large), {})
        note = "" if a.get("all_connected") and b.get("all_connected") else " (not all connected)"
        wall = ratio(b.get("time_to_connect_s"), a.get("time_to_connect_s"))
        cpu = ratio(b.get("broker_connect_cpu_s"), a.get("broker_connect_cpu_s"))
        lines.append(f"| {kind} | {wall}{note} | {cpu} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench hold``; exit status 0 when every run completed."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 500 and 2000")
    parser.add_argument("--sizes", type=int, nargs="+", help="override the fleet sizes")
    parser.add_argument("--brokers", nargs="+", choices=("epns", "mosquitto"),
                        default=["epns", "mosquitto"])
    parser.add_argument("--hold", type=float, default=10.0, help="idle hold, seconds")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--phase-timeout", type=float, default=180.0,
                        help="cap on each connect phase, seconds")
    parser.add_argument("--agent-timeout", type=float, default=30.0)
    parser.add_argument("--tls12", action="store_true", help="agents offer TLS 1.2 at most")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin broker and load generator to separate CPUs")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-work"))
    parser.add_argument("--mosquitto", default=MOSQUITTO)
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or ([500, 2000] if args.quick else [2000, 10000]))

    raise_nofile_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_root = args.work_dir / stamp
    work_root.mkdir(parents=True)
    print(f"PKI: {ensure_bench_pki(args.pki_dir, max(sizes))} in {args.pki_dir}",
          file=sys.stderr, flush=True)

    data: dict[str, Any] = {
        **run_record(args.mosquitto),
        "settings": {
            "sizes": sizes, "brokers": args.brokers, "hold_s": args.hold,
            "concurrency": args.concurrency, "phase_timeout_s": args.phase_timeout,
            "agent_timeout_s": args.agent_timeout, "tls_max": "1.2" if args.tls12 else None,
            "pinned": "broker on CPU 0, loadgen on CPU 1" if args.pin else "no",
            "epns_admission": "connect_rate=100000 connect_burst=100000 (raised from "
                              "1000/s burst 500 to measure raw connect cost)",
            "work_dir": str(work_root),
        },
        "runs": [],
    }
    for kind in args.brokers:
        for count in sizes:
            data["runs"].append(run_one(kind, count, args, work_root))
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_and_print(data, f"hold-{stamp}", markdown(data))
    failed = [r for r in data["runs"] if "error" in r]
    return 1 if failed else 0

