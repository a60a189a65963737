"""Agent idle footprint: one real ``epns-agent`` process, idle, connected to a broker.

The agent's footprint targets: idle RSS <= 40 MB, idle CPU about zero, idle
traffic <= 3.5 KB per hour at keep-alive 300 s, counted in bytes on the socket.

For each broker (the epns broker, then Debian's Mosquitto with the shipped
contract configuration), start the broker on a free loopback port, start one
agent (``python -m agent_push run --config agent.toml``: keep-alive 300 s on
the primary route, sync action = a trivial command that sleeps 1 s, or with
``--sync http`` an HTTP sync against the test suite's HTTPS stand-in for the
management server; sync interval longer than the run), wait for its
``connected route=`` line and its on-connect sync, let it settle, then watch it
for an idle window (default 600 s):

- RSS (``VmRSS`` from /proc/PID/status) at both ends of the window and the
  largest value sampled during it;
- CPU (utime + stime of all threads, /proc/PID/stat) over the window, as % of
  one core and CPU-seconds per hour, with the scheduler's nanosecond run time
  (/proc/PID/task/*/schedstat) and context switches (wake-ups) as cross-checks;
- bytes the agent's TCP socket sent and received during the window, read from
  the kernel (``ss -tin``: bytes_sent, bytes_acked, bytes_received, data
  segments) at both ends: TLS records included, TCP/IP headers not. Extrapolated
  to one hour, next to the MQTT-level expectation (one PINGREQ and PINGRESP per
  keep-alive period).

Results go to ``bench/results/agent-idle-<timestamp>.json`` and a markdown
table is printed.

    python -m bench agent-idle              # 600 s window per broker
    python -m bench agent-idle --quick      # 120 s window (no ping expected)
    python -m bench agent-idle --quick --sync http   # RSS after an HTTP sync

Everything runs on 127.0.0.1; every wait is bounded; processes are stopped in
``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.agents import agent_command, agent_env, write_agent_config
from bench.bench_pki import DEFAULT_DIR, ensure_named_agent
from bench.brokers import MOSQUITTO, start_epns, start_mosquitto
from bench.processes import stop_process, wait_for_line
from bench.procfs import proc_cpu_seconds, proc_status, system_cpu_seconds
from bench.results_io import (
    code_identity,
    fmt,
    mib,
    run_record,
    save_and_print,
    uncommitted,
)
from epns import pki

AGENT_ID = "bench-idle-agent"
READY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# TLS 1.3 record around one MQTT packet: 5 B header, 1 B inner content type,
# 16 B AEAD tag (AES-GCM and ChaCha20-Poly1305 alike).
TLS13_RECORD_OVERHEAD = 5 + 1 + 16
PING_PACKET = 2  # PINGREQ and PINGRESP are 2 bytes each in MQTT 3.1.1
# IPv4 (20 B) + TCP (20 B) + the timestamp option (12 B) per segment, as on
# loopback and most Linux peers: the wire-level estimate, not a measurement.
TCP_IP_HEADER = 52
# The sync action: a trivial program. It sleeps 1 s so that the on-connect
# sync's report reaches the socket well after the "connected" line, where the
# bytes of the connection setup are read: the two are told apart reliably.
SYNC_COMMAND = [sys.executable, "-c", "import time; time.sleep(1)"]
TARGET_RSS_BYTES = 40 * 1000 * 1000
TARGET_TRAFFIC_BYTES_PER_HOUR = 3500
TARGET_CPU_PCT = 0.1  # "about zero", read here as below 0.1 % of one core


# -- /proc and ss ---------------------------------------------------------------

def task_counters(pid: int) -> dict[str, float]:
    """Summed over the process's threads: run time from schedstat (ns
    resolution, unlike the 10 ms ticks of /proc/PID/stat) and context
    switches. A thread that exits takes its share with it."""
    run_ns = 0
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            run_ns += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return {"run_s": run_ns / 1e9, "voluntary_ctxt": voluntary, "involuntary_ctxt": involuntary}


_SS_FIELDS = ("bytes_sent", "bytes_acked", "bytes_received", "segs_out", "segs_in",
              "data_segs_out", "data_segs_in", "bytes_retrans")


def agent_socket(broker_port: int, agent_pid: int) -> dict[str, Any]:
    """The agent's established TCP connection to ``broker_port``, from ``ss -tinp``:
    the kernel's per-socket byte and segment counters since it was opened."""
    done = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"( dport = :{broker_port} )"],
        capture_output=True, text=True, timeout=10, check=True)
    sockets: list[list[str]] = []
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        if line[:1].isspace() and sockets:
            sockets[-1].append(line.strip())
        else:
            sockets.append([line.strip()])
    found = []
    for parts in sockets:
        text = " ".join(parts)
        pids = [int(p) for p in re.findall(r"pid=(\d+)", text)]
        if pids and agent_pid not in pids:
            continue
        local = text.split()[2]
        counters = {name: int(m.group(1)) if (m := re.search(rf"\b{name}:(\d+)", text)) else 0
                    for name in _SS_FIELDS}
        found.append({"local": local, "at": time.monotonic(), **counters, "raw": text})
    if len(found) != 1:
        raise RuntimeError(f"expected one agent connection to port {broker_port}, "
                           f"found {len(found)}:\n{done.stdout}")
    return found[0]


def socket_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, int]:
    """Counter differences between two samples of the same socket."""
    if a["local"] != b["local"]:
        raise RuntimeError(f"the agent reconnected: {a['local']} -> {b['local']}")
    return {name: b[name] - a[name] for name in _SS_FIELDS}


class Sample:
    """The agent (and, for context, the broker) at one instant."""

    def __init__(self, agent_pid: int, broker_pid: int, broker_port: int) -> None:
        busy, steal = system_cpu_seconds()
        self.at = time.monotonic()
        self.wall = time.time()
        self.cpu_s = proc_cpu_seconds(agent_pid)
        self.tasks = task_counters(agent_pid)
        self.status = proc_status(agent_pid)
        self.broker_cpu_s = proc_cpu_seconds(broker_pid)
        self.broker_rss_kib = proc_status(broker_pid)["rss_kib"]
        self.socket = agent_socket(broker_port, agent_pid)
        ours = self.cpu_s + self.broker_cpu_s + proc_cpu_seconds(os.getpid())
        self.others_cpu_s = busy - ours
        self.steal_s = steal


# -- processes --------------------------------------------------------------------

def sync_settings(kind: str, interval: float, url: str | None) -> dict[str, Any]:
    """The agent's [sync]: the trivial command, or HTTP (POST and GET) to ``url``."""
    if kind == "http":
        return {"action": "http", "url": url, "fetch": True, "interval": interval}
    return {"action": "command", "command": SYNC_COMMAND, "interval": interval}


def start_sync_server(pki_dir: Path) -> Any:
    """The test suite's HTTPS stand-in for the management server's sync
    endpoint, on 127.0.0.1, with the broker's certificate from ``pki_dir``."""
    # From the repository root (python -m bench's working directory), which
    # puts the tests package on sys.path.
    from tests.support.sync_server import SyncServer  # noqa: PLC0415 (only for --sync http)

    return SyncServer(pki_dir)


def agent_config(path: Path, pki_dir: Path, pair: pki.Pair, port: int,
                 keepalive: int, sync: dict[str, Any]) -> Path:
    """agent.toml: the agent's defaults except the broker address, the PKI,
    keep-alive on the primary route, and the sync."""
    return write_agent_config(path, path.parent / "state", {
        "identity": {"agent_id": AGENT_ID, "cert": str(pair.cert), "key": str(pair.key)},
        "broker": {"host": "127.0.0.1", "ports": [port], "ca": str(pki_dir / pki.CA_CERT),
                   "server_public_key": str(pki_dir / pki.SIGNING_PUB)},
        "proxy": {"use_env": False},
        "keepalive": {"primary": keepalive},
        "sync": sync,
        "log": {"level": "info", "format": "text"},
    })


def log_lines(path: Path) -> list[str]:
    """The lines of a log file so far."""
    return path.read_text(errors="replace").splitlines() if path.exists() else []


# -- one run ----------------------------------------------------------------------

def run_one(kind: str, args: argparse.Namespace, pair: pki.Pair, work: Path) -> dict[str, Any]:
    """One broker, one agent, one idle window."""
    work = work / kind
    work.mkdir(parents=True)
    print(f"== {kind}: starting broker", file=sys.stderr, flush=True)
    try:
        if kind == "epns":
            # One agent: the admission limits the hold lifts do not matter.
            broker = start_epns(args.pki_dir, work, None, lift_admission=False)
        else:
            broker = start_mosquitto(args.pki_dir, work, None, args.mosquitto)
    except (RuntimeError, OSError) as exc:
        return {"broker": kind, "error": f"broker did not start: {exc}"}
    result: dict[str, Any] = {"broker": kind, "broker_port": broker.port,
                              "broker_pid": broker.pid, "broker_notes": broker.notes,
                              "broker_log": str(broker.log)}
    agent: subprocess.Popen[bytes] | None = None
    sync_server = None
    agent_log = work / "agent.log"
    try:
        if args.sync == "http":
            sync_server = start_sync_server(args.pki_dir)
        sync = sync_settings(args.sync, args.sync_interval,
                             sync_server.url if sync_server is not None else None)
        config = agent_config(work / "agent.toml", args.pki_dir, pair, broker.port,
                              args.keepalive, sync)
        command = agent_command(config)
        result["agent_command"] = " ".join(command)
        result["agent_config"] = config.read_text()
        result["agent_log"] = str(agent_log)
        with agent_log.open("wb") as stderr:
            agent = subprocess.Popen(command, cwd=ROOT, env=agent_env(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=stderr)
        started = time.monotonic()
        result["agent_pid"] = agent.pid
        line = wait_for_line(agent_log, r"connected route=(\S+) keepalive=(\d+)", agent,
                             CONNECT_TIMEOUT_S)
        # Read the socket at once: everything since it opened (TCP, TLS
        # handshake, CONNECT, SUBSCRIBE, birth presence) up to "connected".
        at_connected = agent_socket(broker.port, agent.pid)
        synced_before = any(" sync_done " in x or " sync_failed " in x
                            for x in log_lines(agent_log))
        result["start_to_connected_s"] = round(time.monotonic() - started, 2)
        result["route"], result["keepalive"] = line.group(1), int(line.group(2))
        if result["keepalive"] != args.keepalive:
            raise RuntimeError(f"agent uses keep-alive {result['keepalive']}, "
                               f"not {args.keepalive}")
        print(f"   agent connected via {result['route']} keepalive={result['keepalive']} "
              f"after {result['start_to_connected_s']} s; settling {args.settle:g} s",
              file=sys.stderr, flush=True)
        time.sleep(args.settle)
        wait_for_line(agent_log, r" sync_(done|failed) .*reason=connect", agent, 30.0)

        lines_at_start = len(log_lines(agent_log))
        first = Sample(agent.pid, broker.pid, broker.port)
        rss_max = first.status["rss_kib"]
        rss_min = first.status["rss_kib"]
        timeline: list[dict[str, Any]] = []
        previous = first.socket
        deadline = first.at + args.duration
        next_report = first.at + 60
        while (now := time.monotonic()) < deadline:
            time.sleep(min(args.sample_interval, deadline - now))
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.returncode} during the window")
            status = proc_status(agent.pid)
            rss_max = max(rss_max, status["rss_kib"])
            rss_min = min(rss_min, status["rss_kib"])
            current = agent_socket(broker.port, agent.pid)
            delta = socket_delta(previous, current)
            if delta["bytes_sent"] or delta["bytes_received"]:
                timeline.append({"t_s": round(current["at"] - first.at, 1), **delta})
            previous = current
            if time.monotonic() >= next_report:
                next_report += 60
                print(f"   {time.monotonic() - first.at:.0f} s of {args.duration:g} s; "
                      f"RSS {status['rss_kib'] / 1024:.1f} MiB, socket events so far "
                      f"{len(timeline)}", file=sys.stderr, flush=True)
        last = Sample(agent.pid, broker.pid, broker.port)
        rss_max = max(rss_max, last.status["rss_kib"])
        rss_min = min(rss_min, last.status["rss_kib"])
        window_lines = log_lines(agent_log)[lines_at_start:]

        window = last.at - first.at
        per_hour = 3600 / window
        wire = socket_delta(first.socket, last.socket)
        connect = {name: at_connected[name] for name in _SS_FIELDS}
        settle = socket_delta(at_connected, first.socket)
        cpu = last.cpu_s - first.cpu_s
        run_s = last.tasks["run_s"] - first.tasks["run_s"]
        switches = (last.tasks["voluntary_ctxt"] - first.tasks["voluntary_ctxt"]
                    + last.tasks["involuntary_ctxt"] - first.tasks["involuntary_ctxt"])
        sent_h = wire["bytes_sent"] * per_hour
        received_h = wire["bytes_received"] * per_hour
        segments = wire["segs_out"] + wire["segs_in"]
        result.update({
            "window_s": round(window, 2),
            "window_started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(first.wall)),
            "rss_start_kib": first.status["rss_kib"],
            "rss_end_kib": last.status["rss_kib"],
            "rss_max_kib": rss_max,
            "rss_min_kib": rss_min,
            "rss_hwm_kib": last.status["hwm_kib"],
            "rss_anon_end_kib": last.status["rss_anon_kib"],
            "rss_file_end_kib": last.status["rss_file_kib"],
            "threads": last.status["threads"],
            "rss_samples_every_s": args.sample_interval,
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / window, 4),
            "cpu_s_per_hour": round(cpu * per_hour, 2),
            "sched_run_s": round(run_s, 4),
            "sched_cpu_pct": round(100 * run_s / window, 4),
            "sched_cpu_s_per_hour": round(run_s * per_hour, 3),
            "context_switches_per_s": round(switches / window, 2),
            "wire_window": wire,
            "bytes_sent_per_hour": round(sent_h),
            "bytes_received_per_hour": round(received_h),
            "bytes_total_per_hour": round(sent_h + received_h),
            "segments_per_hour": round(segments * per_hour),
            "tcp_ip_bytes_per_hour_estimate": round(
                sent_h + received_h + segments * per_hour * TCP_IP_HEADER),
            "wire_timeline": timeline,
            "connection_setup": connect,
            "connection_setup_sync_done_before_sample": synced_before,
            "after_connected_until_window": settle,
            "socket_local": first.socket["local"],
            "ss_start": first.socket["raw"],
            "ss_end": last.socket["raw"],
            "agent_log_lines_in_window": window_lines,
            "broker_cpu_pct_window": round(100 * (last.broker_cpu_s - first.broker_cpu_s)
                                           / window, 3),
            "broker_rss_end_kib": last.broker_rss_kib,
            "others_cpu_pct_window": round(100 * (last.others_cpu_s - first.others_cpu_s)
                                           / window, 2),
            "steal_pct_window": round(100 * (last.steal_s - first.steal_s) / window, 2),
        })
        print(f"   done: RSS {last.status['rss_kib'] / 1024:.1f} MiB, CPU {cpu:.2f} s, "
              f"sent {wire['bytes_sent']} B, received {wire['bytes_received']} B",
              file=sys.stderr, flush=True)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"   FAILED: {result['error']}", file=sys.stderr, flush=True)
    finally:
        if agent is not None:
            result["agent_stop"] = stop_process(agent, STOP_TIMEOUT_S)
        if sync_server is not None:
            sync_server.close()
        result["broker_stop"] = broker.stop()
        result["agent_log_tail"] = log_lines(agent_log)[-30:]
        result["broker_log_warnings"] = [
            x for x in log_lines(broker.log)
            if re.search(r"\b(WARNING|ERROR|CRITICAL|Warning|Error)\b", x)][:30]
    return result


# -- report -----------------------------------------------------------------------

def expected_pings(args: argparse.Namespace) -> dict[str, Any]:
    """What MQTT alone predicts: one PINGREQ and one PINGRESP per keep-alive period."""
    per_hour = 3600 / args.keepalive
    record = PING_PACKET + TLS13_RECORD_OVERHEAD
    return {
        "pings_per_hour": per_hour,
        "mqtt_bytes_per_hour_each_way": round(per_hour * PING_PACKET),
        "tls13_record_bytes_per_ping": record,
        "tls13_bytes_per_hour_each_way": round(per_hour * record),
        "tls13_bytes_per_hour_total": round(2 * per_hour * record),
        "pings_expected_in_window": math.floor(args.duration / args.keepalive),
    }


def markdown(data: dict[str, Any]) -> str:
    """Both brokers side by side, then the targets."""
    runs = data["runs"]

    def wire(r: dict[str, Any], key: str) -> Any:
        return (r.get("wire_window") or {}).get(key)

    def setup(r: dict[str, Any], key: str) -> Any:
        return (r.get("connection_setup") or {}).get(key)

    def after(r: dict[str, Any], key: str) -> Any:
        return (r.get("after_connected_until_window") or {}).get(key)

    rows: list[tuple[str, Callable[[dict[str, Any]], Any], int]] = [
        ("idle window (s)", lambda r: r.get("window_s"), 1),
        ("agent RSS at window start (MiB)", lambda r: mib(r.get("rss_start_kib")), 1),
        ("agent RSS at window end (MiB)", lambda r: mib(r.get("rss_end_kib")), 1),
        ("agent RSS max during window (MiB, sampled)", lambda r: mib(r.get("rss_max_kib")), 1),
        ("agent RSS peak since start (VmHWM, MiB)", lambda r: mib(r.get("rss_hwm_kib")), 1),
        ("agent RSS anonymous / file-backed at end (MiB)",
         lambda r: f"{fmt(mib(r.get('rss_anon_end_kib')))} / "
                   f"{fmt(mib(r.get('rss_file_end_kib')))}", 1),
        ("agent threads", lambda r: r.get("threads"), 0),
        ("agent CPU in window, utime+stime (s)", lambda r: r.get("cpu_s"), 2),
        ("agent CPU % of one core (utime+stime)", lambda r: r.get("cpu_pct"), 3),
        ("agent CPU-seconds per hour (utime+stime)", lambda r: r.get("cpu_s_per_hour"), 2),
        ("agent CPU % of one core (schedstat, ns)", lambda r: r.get("sched_cpu_pct"), 3),
        ("agent context switches per second", lambda r: r.get("context_switches_per_s"), 2),
        ("bytes sent by the agent in window (TLS records)", lambda r: wire(r, "bytes_sent"), 0),
        ("bytes received by the agent in window", lambda r: wire(r, "bytes_received"), 0),
        ("data segments out / in in window",
         lambda r: f"{fmt(wire(r, 'data_segs_out'))} / {fmt(wire(r, 'data_segs_in'))}", 0),
        ("all segments out / in in window (incl. pure ACKs)",
         lambda r: f"{fmt(wire(r, 'segs_out'))} / {fmt(wire(r, 'segs_in'))}", 0),
        ("bytes sent per hour (extrapolated from window)",
         lambda r: r.get("bytes_sent_per_hour"), 0),
        ("bytes received per hour (extrapolated)", lambda r: r.get("bytes_received_per_hour"),
         0),
        ("bytes per hour, both directions (extrapolated)",
         lambda r: r.get("bytes_total_per_hour"), 0),
        ("with TCP/IP headers, 52 B/segment (estimate, per hour)",
         lambda r: r.get("tcp_ip_bytes_per_hour_estimate"), 0),
        ("connection setup until `connected`, sent / received (B)",
         lambda r: f"{fmt(setup(r, 'bytes_sent'))} / {fmt(setup(r, 'bytes_received'))}", 0),
        ("after `connected` until window (on-connect sync report), sent / received (B)",
         lambda r: f"{fmt(after(r, 'bytes_sent'))} / {fmt(after(r, 'bytes_received'))}", 0),
        ("agent log lines during window", lambda r: len(r.get("agent_log_lines_in_window")
                                                        or []) if "window_s" in r else None, 0),
        ("broker CPU % during window (context)", lambda r: r.get("broker_cpu_pct_window"), 3),
        ("broker RSS (MiB, context)", lambda r: mib(r.get("broker_rss_end_kib")), 1),
        ("other processes' CPU % / steal % (noise)",
         lambda r: f"{fmt(r.get('others_cpu_pct_window'))} / {fmt(r.get('steal_pct_window'))}",
         1),
    ]
    header = ["metric", *[r["broker"] for r in runs]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get, digits in rows:
        lines.append("| " + " | ".join([label, *[fmt(get(r), digits) for r in runs]]) + " |")
    exp = data["expected"]
    lines += [
        "",
        f"MQTT-level expectation at keep-alive {data['settings']['keepalive_s']} s: "
        f"{exp['pings_per_hour']:g} PINGREQ + PINGRESP per hour = "
        f"{exp['mqtt_bytes_per_hour_each_way']} B of MQTT each way; in TLS 1.3 records "
        f"({exp['tls13_record_bytes_per_ping']} B each) {exp['tls13_bytes_per_hour_each_way']}"
        f" B each way, {exp['tls13_bytes_per_hour_total']} B per hour in total; "
        f"{exp['pings_expected_in_window']} ping(s) expected in a "
        f"{data['settings']['duration_s']:g} s window.",
        "",
        "| target | " + " | ".join(r["broker"] for r in runs) + " |",
        "|" + "---|" * (len(runs) + 1),
    ]
    for label, verdict in (
        ("idle RSS <= 40 MB (40,000,000 B = 38.1 MiB; max during window)",
         lambda r: _met(r.get("rss_max_kib"), TARGET_RSS_BYTES / 1024,
                        f"{fmt(mib(r.get('rss_max_kib')))} MiB")),
        (f"idle CPU about zero (< {TARGET_CPU_PCT} % of one core)",
         lambda r: _met(r.get("cpu_pct"), TARGET_CPU_PCT, f"{fmt(r.get('cpu_pct'), 3)} %")),
        ("idle traffic <= 3.5 KB/h (3,500 B) on the socket, both directions",
         lambda r: _met(r.get("bytes_total_per_hour"), TARGET_TRAFFIC_BYTES_PER_HOUR,
                        f"{fmt(r.get('bytes_total_per_hour'))} B/h")),
    ):
        lines.append("| " + " | ".join([label, *[verdict(r) for r in runs]]) + " |")
    return "\n".join(lines)


def _met(value: Any, limit: float, shown: str) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{'met' if value <= limit else 'NOT met'} ({shown})"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench agent-idle``; exit status 0 when every run completed."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0,
                        help="idle window per broker, seconds (default 600)")
    parser.add_argument("--quick", action="store_true", help="120 s window")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds between 'connected' and the window")
    parser.add_argument("--keepalive", type=int, default=300, help="primary-route keep-alive")
    parser.add_argument("--sync", choices=("command", "http"), default="command",
                        help="the agent's sync action: a trivial command (default), or HTTP "
                             "to the test suite's stand-in for the management server")
    parser.add_argument("--sync-interval", type=float, default=86400.0,
                        help="agent sync interval, s (default 86400: no sync in the window)")
    parser.add_argument("--sample-interval", type=float, default=5.0,
                        help="RSS and socket sampling period during the window, s")
    parser.add_argument("--brokers", nargs="+", choices=("epns", "mosquitto"),
                        default=["epns", "mosquitto"])
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-work"))
    parser.add_argument("--mosquitto", default=MOSQUITTO)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 120.0
    if "mosquitto" in args.brokers and not Path(args.mosquitto).exists():
        print(f"no mosquitto at {args.mosquitto}: epns only", file=sys.stderr)
        args.brokers = [b for b in args.brokers if b != "mosquitto"]

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.work_dir / f"agent-idle-{stamp}"
    work.mkdir(parents=True)
    pair = ensure_named_agent(args.pki_dir, AGENT_ID)
    data: dict[str, Any] = {
        **run_record(args.mosquitto if "mosquitto" in args.brokers else None),
        "code": {**code_identity("agent_push", "epns"),
                 "uncommitted_agent_epns_broker": uncommitted("agent_push", "epns", "broker")},
        "settings": {
            "duration_s": args.duration, "settle_s": args.settle,
            "keepalive_s": args.keepalive, "sync_interval_s": args.sync_interval,
            "sync_action": sync_settings(args.sync, args.sync_interval, "(stand-in's URL)"),
            "sample_interval_s": args.sample_interval, "brokers": args.brokers,
            "agent_id": AGENT_ID, "pki_dir": str(args.pki_dir), "work_dir": str(work),
            "traffic_source": "ss -tinp: kernel tcp_info of the agent's socket "
                              "(payload bytes incl. TLS records, no TCP/IP headers)",
        },
        "expected": expected_pings(args),
        "runs": [],
    }
    for kind in args.brokers:
        data["runs"].append(run_one(kind, args, pair, work))
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_and_print(data, f"agent-idle-{stamp}", markdown(data))
    return 1 if any("error" in r for r in data["runs"]) else 0

