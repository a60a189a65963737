"""The brokers under test, as processes: the epns broker and Mosquitto.

Both get the benchmark PKI, the same ACL contract and one TLS listener on a
loopback port. Everything they print goes to a log file in the work directory.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.processes import pinned, stop_process, wait_for_line

# The console script installed beside this interpreter (the venv's).
EPNS_BROKER = Path(sys.executable).parent / "epns-broker"
# Debian's Mosquitto unless another is on PATH; every command's --mosquitto default.
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A free loopback TCP port (for brokers that cannot listen on port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    """A broker process under test."""

    kind: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int | None = None
    # Listener name -> port, for a broker with more than one (the epns one-port run).
    ports: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The broker's process id (the one /proc is read for)."""
        return self.process.pid

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then wait; SIGKILL only if it does not stop in time."""
        return stop_process(self.process)


def epns_env(pki_dir: Path, *, port: int = 0, lift_admission: bool = True,
             one_port: bool = False, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The epns broker's settings for the benchmark, as environment variables;
    with ``one_port`` its fallback (one-port) listener is open too, with its
    defaults, on a free loopback port; ``settings`` adds or overrides
    variables (``{"LIMITS__TLS_HANDSHAKE_TIMEOUT": "1"}``, the prefix left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPNS_")}
    env.update({
        "EPNS_BROKER_LISTENERS__PRIMARY__HOST": "127.0.0.1",
        "EPNS_BROKER_LISTENERS__PRIMARY__PORT": str(port),
        "EPNS_BROKER_LISTENERS__FALLBACK__ENABLED": "false",
        "EPNS_BROKER_TLS__CERT": str(pki_dir / "broker.crt"),
        "EPNS_BROKER_TLS__KEY": str(pki_dir / "broker.key"),
        "EPNS_BROKER_TLS__CA": str(pki_dir / "ca.crt"),
        "EPNS_BROKER_IDENTITY__SERVER_PUBLIC_KEY": str(pki_dir / "signing.pub"),
        "EPNS_BROKER_IDENTITY__REVOCATION_FILE": str(pki_dir / "revoked.txt"),
        "EPNS_BROKER_METRICS__HOST": "127.0.0.1",
        "EPNS_BROKER_METRICS__PORT": "0",
    })
    if lift_admission:
        # Admission control (default 1000/s, burst 500) would refuse part of
        # the benchmark's burst before TLS; lifted to measure raw connect cost.
        env["EPNS_BROKER_LIMITS__CONNECT_RATE"] = "100000"
        env["EPNS_BROKER_LIMITS__CONNECT_BURST"] = "100000"
    if one_port:
        env.update({"EPNS_BROKER_LISTENERS__FALLBACK__ENABLED": "true",
                    "EPNS_BROKER_LISTENERS__FALLBACK__HOST": "127.0.0.1",
                    "EPNS_BROKER_LISTENERS__FALLBACK__PORT": "0"})
    env.update({f"EPNS_BROKER_{key}": value for key, value in (settings or {}).items()})
    return env


def start_epns(pki_dir: Path, work: Path, cpu: int | None, *, port: int = 0,
               lift_admission: bool = True, one_port: bool = False,
               log_name: str = "epns-broker.log",
               settings: dict[str, str] | None = None) -> Broker:
    """Start ``epns-broker`` (on ``port``, 0 = any free one; with ``one_port``
    the fallback listener too) and wait for its ready line, which names the
    port of each listener."""
    log = work / log_name
    env = epns_env(pki_dir, port=port, lift_admission=lift_admission, one_port=one_port,
                   settings=settings)
    with log.open("wb") as stderr:
        process = subprocess.Popen(pinned([str(EPNS_BROKER)], cpu), env=env,
                                   cwd=work, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        ready = wait_for_line(log, r"ready ports=(\S+)", process, READY_TIMEOUT_S)
        ports = {name: int(number) for name, _, number in
                 (item.partition(":") for item in ready.group(1).split(","))}
        wanted = {"primary", "fallback"} if one_port else {"primary"}
        if set(ports) != wanted:
            raise RuntimeError(f"expected the listeners {sorted(wanted)}, got {ports}")
        metrics = re.search(r"metrics url=http://127\.0\.0\.1:(\d+)/", log.read_text())
    except RuntimeError:
        process.kill()
        process.wait()
        raise
    return Broker("epns", process, ports["primary"], log,
                  int(metrics.group(1)) if metrics else None, ports=ports)


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


def start_mosquitto(pki_dir: Path, work: Path, cpu: int | None, binary: str, *,
                    port: int | None = None, log_name: str = "mosquitto.log") -> Broker:
    """Start Mosquitto with the rendered contract config (on ``port``, or a
    free one); wait until it runs."""
    port = port or free_port()
    conf, notes = render_mosquitto_conf(pki_dir, work, port)
    log = work / log_name
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
