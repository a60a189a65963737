"""Hold benchmark: N idle agents on the epns broker and on Mosquitto.

For each broker and each fleet size N, start the broker as its own process on
a free loopback port, start ``bench/loadgen.py`` as another, connect N agents
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

    /tmp/venv/bin/python bench/run_hold.py            # N = 2000, 10000
    /tmp/venv/bin/python bench/run_hold.py --quick    # N = 500, 2000

Everything runs on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_pki import DEFAULT_DIR, ensure_bench_pki

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
EPNS_BROKER = Path(sys.executable).parent / "epns-broker"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Let a fresh broker finish its start-up work before the baseline is taken.
SETTLE_S = 2.0
BASELINE_IDLE_S = 3.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


# -- /proc ------------------------------------------------------------------

def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB, and the thread count, from /proc/PID/status."""
    wanted = {"VmRSS": "rss_kib", "VmHWM": "hwm_kib", "Threads": "threads"}
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            values[wanted[key]] = int(value.split()[0])
    return values


def system_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all CPUs, from /proc/stat. Busy is user,
    kernel and interrupt time: depending on the kernel's accounting, loopback
    softirq work is charged to the process or only here. Steal is time the
    hypervisor gave to other guests: on a VM it slows everything down."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def tcp_counters() -> dict[str, int]:
    """Listen-queue overflows and SYN retransmissions (whole network namespace)
    from /proc/net/netstat: a client whose SYN overflowed the broker's accept
    queue retries after 1 s, which shows up as a latency tail."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    wanted = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return {name: int(table.get(name, 0)) for name in wanted}
    return {}


@dataclass
class Sample:
    """The broker at one instant, and how much CPU everything else had used."""

    at: float
    cpu_s: float
    rss_kib: int
    # CPU of every process but the broker, the load generator and this one:
    # another job on the machine shows up here and flags the run.
    others_cpu_s: float
    steal_s: float

    @classmethod
    def take(cls, pid: int, loadgen_pid: int | None = None) -> Sample:
        """Read /proc now."""
        busy, steal = system_cpu_seconds()
        cpu = proc_cpu_seconds(pid)
        ours = cpu + proc_cpu_seconds(os.getpid())
        if loadgen_pid is not None:
            ours += proc_cpu_seconds(loadgen_pid)
        return cls(time.monotonic(), cpu, proc_status(pid)["rss_kib"], busy - ours, steal)


def others_pct(a: Sample, b: Sample) -> float:
    """CPU % (of one core) used by other processes between two samples."""
    return round(100 * (b.others_cpu_s - a.others_cpu_s) / (b.at - a.at), 1)


def steal_pct(a: Sample, b: Sample) -> float:
    """CPU % (of one core) stolen by the hypervisor between two samples."""
    return round(100 * (b.steal_s - a.steal_s) / (b.at - a.at), 1)


# -- processes ---------------------------------------------------------------

def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on one CPU (through taskset, which execs it, so the pid
    stays the program's), so broker and load generator do not steal each
    other's core. The open-file limit needs nothing here: main() raised the
    soft limit to the hard one and children inherit it."""
    if cpu is None:
        return command
    return ["taskset", "--cpu-list", str(cpu), *command]


def free_port() -> int:
    """A free loopback TCP port (for brokers that cannot listen on port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def code_identity() -> dict[str, str]:
    """Which code a broker process is about to run: the commit, and a hash of
    the broker/ and epns/ sources (others may be editing the working tree)."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("broker/*.py"), *ROOT.glob("epns/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return {"git": git, "sources_sha256": digest.hexdigest()[:16]}


def wait_for_line(path: Path, pattern: str, process: subprocess.Popen[bytes],
                  timeout: float) -> re.Match[str]:
    """Poll a log file until a line matches; fail if the process exits first."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = regex.search(text)
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
    raise RuntimeError(f"no line matching {pattern!r} in {path}:\n{tail}")


@dataclass
class Broker:
    """A broker process under test."""

    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The broker's process id (the one /proc is read for)."""
        return self.process.pid

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then wait; SIGKILL only if it does not stop in time."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
            killed = False
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
            killed = True
        return {"seconds": round(time.monotonic() - started, 2), "exit_code": code,
                "killed_after_timeout": killed}


def epns_env(pki_dir: Path) -> dict[str, str]:
    """The epns broker's settings for the benchmark, as environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPNS_")}
    env.update({
        "EPNS_BROKER_LISTENERS__PRIMARY__HOST": "127.0.0.1",
        "EPNS_BROKER_LISTENERS__PRIMARY__PORT": "0",
        "EPNS_BROKER_LISTENERS__FALLBACK__ENABLED": "false",
        "EPNS_BROKER_TLS__CERT": str(pki_dir / "broker.crt"),
        "EPNS_BROKER_TLS__KEY": str(pki_dir / "broker.key"),
        "EPNS_BROKER_TLS__CA": str(pki_dir / "ca.crt"),
        "EPNS_BROKER_IDENTITY__SERVER_PUBLIC_KEY": str(pki_dir / "signing.pub"),
        "EPNS_BROKER_IDENTITY__REVOCATION_FILE": str(pki_dir / "revoked.txt"),
        "EPNS_BROKER_METRICS__HOST": "127.0.0.1",
        "EPNS_BROKER_METRICS__PORT": "0",
        # Admission control (default 1000/s, burst 500) would refuse part of
        # the benchmark's burst before TLS; lifted to measure raw connect cost.
        "EPNS_BROKER_LIMITS__CONNECT_RATE": "100000",
        "EPNS_BROKER_LIMITS__CONNECT_BURST": "100000",
    })
    return env


def start_epns(pki_dir: Path, work: Path, cpu: int | None) -> Broker:
    """Start ``epns-broker`` and wait for its ready line."""
    log = work / "epns-broker.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(pinned([str(EPNS_BROKER)], cpu), env=epns_env(pki_dir),
                                   cwd=work, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        ready = wait_for_line(log, r"ready ports=primary:(\d+)", process, READY_TIMEOUT_S)
        metrics = re.search(r"metrics url=http://127\.0\.0\.1:(\d+)/", log.read_text())
    except RuntimeError:
        process.kill()
        process.wait()
        raise
    return Broker("epns", process, int(ready.group(1)), log,
                  int(metrics.group(1)) if metrics else None)


# The options of the shipped 443 listener block, dropped with it.
_LISTENER_OPTS = {"cafile", "certfile", "keyfile", "require_certificate", "tls_version",
                  "ciphers", "use_identity_as_username", "use_username_as_clientid"}


def render_mosquitto_conf(pki_dir: Path, work: Path, port: int) -> tuple[Path, list[str]]:
    """The shipped contract config with this run's certificate paths, ACL path
    and one loopback listener. Returns the file and what had to change beyond
    paths and ports, with the reason. start_mosquitto checks that Mosquitto
    opened that one listener only: per-listener options written before any
    'listener' line would create a default listener on port 1883."""
    source = ROOT / "docker/mosquitto/mosquitto.conf"
    conf = source.read_text()
    conf = conf.replace("/mosquitto/certs/", f"{pki_dir}/")
    conf = conf.replace("/mosquitto/config/acl", str(work / "acl"))
    shutil.copy(ROOT / "docker/mosquitto/acl", work / "acl")
    notes: list[str] = []
    # One listener: the 8883 block becomes 127.0.0.1:<port>, the 443 block goes.
    head, found_primary, rest = conf.partition("\nlistener 8883\n")
    primary, found_fallback, fallback = rest.partition("\nlistener 443\n")
    if not (found_primary and found_fallback) or "require_certificate true" not in primary:
        raise RuntimeError(f"{source} no longer has the expected 8883 and 443 TLS listeners")
    if any(line.strip() and not line.startswith("#") and line.split()[0] not in _LISTENER_OPTS
           for line in fallback.splitlines()):
        raise RuntimeError(f"{source}: global options after the 443 listener; update the bench")
    conf = f"{head}\nlistener {port} 127.0.0.1\n{primary.rstrip()}\n"
    if os.geteuid() == 0:
        # As root Mosquitto drops to user 'mosquitto' before reading the
        # owner-only broker key, and fails to start.
        conf = "user root\n" + conf
        notes.append("added 'user root' (running as root; the broker key is owner-only)")
    path = work / "mosquitto.conf"
    path.write_text(conf)
    return path, notes


def start_mosquitto(pki_dir: Path, work: Path, cpu: int | None, binary: str) -> Broker:
    """Start Mosquitto with the rendered contract config; wait until it runs."""
    port = free_port()
    conf, notes = render_mosquitto_conf(pki_dir, work, port)
    log = work / "mosquitto.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(pinned([binary, "-c", str(conf)], cpu), cwd=work,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    try:
        wait_for_line(log, r"mosquitto version \S+ running", process, READY_TIMEOUT_S)
        opened = re.findall(r"Opening \S+ listen socket on port (\d+)", log.read_text())
        if opened != [str(port)]:
            raise RuntimeError(f"mosquitto opened listeners {opened}, expected only {port}")
    except RuntimeError:
        process.kill()
        process.wait()
        raise
    return Broker("mosquitto", process, port, log, notes=notes)


class LoadGen:
    """The load generator process and its JSON-lines stdout."""

    def __init__(self, broker: Broker, count: int, args: argparse.Namespace, work: Path,
                 cpu: int | None) -> None:
        hold_cap = SETTLE_S + args.hold + 60  # the orchestrator ends the hold first
        command = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(broker.port),
                   "--pki-dir", str(args.pki_dir), "--count", str(count),
                   "--concurrency", str(args.concurrency),
                   "--phase-timeout", str(args.phase_timeout),
                   "--agent-timeout", str(args.agent_timeout),
                   "--hold", str(hold_cap), "--wait-go"]
        if args.tls12:
            command += ["--tls-max", "1.2"]
        self.command = command
        self.log = work / f"loadgen-{broker.kind}-{count}.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(pinned(command, cpu), cwd=BENCH,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr)
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """Read stdout until the JSON line of event ``name``; bounded in time."""
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                event = json.loads(line)
                if event.get("event") == name:
                    return dict(event)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"loadgen sent no {name!r} event in {timeout:g} s")
            if self._selector.select(timeout=min(remaining, 1.0)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"loadgen exited before {name!r}; see {self.log}")
                self._buffer += chunk

    def go(self) -> None:
        """Start the connect phase."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def end_hold(self) -> None:
        """SIGTERM: stop holding, DISCONNECT everyone, report."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._selector.close()


def scrape_epns_metrics(port: int) -> dict[str, float]:
    """A few gauges from the epns broker's /metrics, as a cross-check."""
    wanted = ("epns_broker_connections", "epns_broker_sessions", "epns_broker_subscriptions",
              "epns_broker_refusals_total", "epns_broker_disconnects_total")
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def log_summary(broker: Broker) -> dict[str, Any]:
    """Warnings and errors in the broker's log, counted, with a few examples."""
    lines = broker.log.read_text(errors="replace").splitlines()
    if broker.kind == "epns":
        bad = [line for line in lines if " WARNING " in line or " ERROR " in line
               or "Traceback" in line]
    else:
        bad = [line for line in lines if "Error" in line or "Warning" in line]
    return {"lines": len(lines), "warnings_or_errors": len(bad), "examples": bad[:5]}


# -- one run -----------------------------------------------------------------

def run_one(kind: str, count: int, args: argparse.Namespace, work_root: Path) -> dict[str, Any]:
    """Start a broker, connect ``count`` agents, hold, measure, stop."""
    work = work_root / f"{kind}-{count}"
    work.mkdir(parents=True)
    pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    broker_cpu, loadgen_cpu = (0, 1) if pin else (None, None)
    print(f"## {kind}, N={count}", file=sys.stderr, flush=True)
    code = code_identity()
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
        time.sleep(SETTLE_S)
        empty_a = Sample.take(broker.pid)
        time.sleep(BASELINE_IDLE_S)
        empty_b = Sample.take(broker.pid)
        result["idle_cpu_pct_no_clients"] = round(
            100 * (empty_b.cpu_s - empty_a.cpu_s) / (empty_b.at - empty_a.at), 2)
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

        time.sleep(1.0)  # let the last connects' follow-up work finish
        hold_a = Sample.take(broker.pid, loadgen.process.pid)
        time.sleep(args.hold)
        hold_b = Sample.take(broker.pid, loadgen.process.pid)
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
            "rss_per_connection_kib": round((hold_b.rss_kib - before.rss_kib) / ok, 2)
            if ok else None,
            "hold_s": round(hold_b.at - hold_a.at, 2),
            "idle_cpu_pct_hold": round(100 * (hold_b.cpu_s - hold_a.cpu_s)
                                       / (hold_b.at - hold_a.at), 2),
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

def machine_info(mosquitto: str) -> dict[str, Any]:
    """What the figures were measured on."""
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal"))
    version = subprocess.run([mosquitto, "-h"], capture_output=True, text=True, check=False)
    mosquitto_version = (version.stdout or version.stderr).splitlines()[0].strip()
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False).stdout.strip()
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                              "broker", "epns"], capture_output=True, text=True,
                             check=False).stdout.split("\n")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "amqtt": importlib.metadata.version("amqtt"),
        "uvloop": importlib.metadata.version("uvloop"),
        "mosquitto": mosquitto_version,
        "git": git,
        "uncommitted_broker_changes": [line for line in changed if line],
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def fmt(value: Any, digits: int = 1) -> str:
    """A figure for a markdown table: thousands separators, "n/a" for none."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "n/a"
    return f"{a / b:.2f}x"


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
                cells.append(_ratio(values[0], values[1]) if comparable else "")
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
        wall = _ratio(b.get("time_to_connect_s"), a.get("time_to_connect_s"))
        cpu = _ratio(b.get("broker_connect_cpu_s"), a.get("broker_connect_cpu_s"))
        lines.append(f"| {kind} | {wall}{note} | {cpu} |")
    return "\n".join(lines)


def mib(kib: Any) -> float | None:
    """KiB to MiB, None when not measured."""
    return kib / 1024 if isinstance(kib, int | float) else None


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or ([500, 2000] if args.quick else [2000, 10000]))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_root = args.work_dir / stamp
    work_root.mkdir(parents=True)
    print(f"PKI: {ensure_bench_pki(args.pki_dir, max(sizes))} in {args.pki_dir}",
          file=sys.stderr, flush=True)

    data: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(args.mosquitto),
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
    table = markdown(data)
    data["table_markdown"] = table
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"hold-{stamp}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")

    machine = data["machine"]
    print(f"Command: `{data['command']}`\n")
    print(f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"{machine['mem_total_mib']:,} MiB, Linux {machine['kernel']}; Python "
          f"{machine['python']}, amqtt {machine['amqtt']}, uvloop {machine['uvloop']}, "
          f"{machine['mosquitto']}, {machine['openssl']}; git {machine['git']}\n")
    print(table)
    print(f"\nResults: {out.relative_to(ROOT)}")
    failed = [r for r in data["runs"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
