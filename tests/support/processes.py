"""Real broker processes on ephemeral loopback ports."""

from __future__ import annotations

import getpass
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, chosen below the kernel's ephemeral
    range: a port from that range (what binding port 0 gives) can be taken
    by any outgoing connection of the parallel tests between this call and
    the bind that uses it, which made NATS nodes fail with "address already
    in use" now and then."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, ephemeral_low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class BrokerProcess:
    """A running broker; ``port`` is the primary listener, ``fallback`` the other."""

    kind: str
    process: subprocess.Popen[str]
    port: int
    fallback: int | None = None
    metrics_port: int | None = None
    lines: list[str] = field(default_factory=list)

    def log_contains(self, pattern: str, timeout: float = 5.0) -> str:
        """Wait until a log line matches ``pattern`` (regex); return it."""
        return wait_for_line(self.lines, pattern, timeout, what=f"{self.kind} broker")

    def metrics(self) -> str:
        assert self.metrics_port is not None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def metric(self, sample: str) -> float:
        """One sample, e.g. ``epns_broker_refusals_total{reason="bad_token"}``; 0 if absent."""
        for line in self.metrics().splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return 0.0

    def stop(self) -> int:
        return stop_process(self.process)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_line(lines: list[str], pattern: str, timeout: float, *, after: int = 0,
                  what: str = "process") -> str:
    """Wait until one of ``lines`` (from index ``after``), which another thread
    fills, matches ``pattern``; return it, or fail with the whole log."""
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        for line in list(lines[after:]):
            if regex.search(line):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no {what} log line matches {pattern!r}; log:\n" + "\n".join(lines))


def stop_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Signal, wait up to 10 s, kill if needed; close the log pipe; the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()
    return int(process.returncode)


def pump_stderr(process: subprocess.Popen[str], lines: list[str]) -> None:
    """Collect a process's stderr lines as they come (run in a thread)."""
    assert process.stderr is not None
    try:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
    except ValueError:
        # stop_process closed the pipe while a child of the process still held
        # its write end open: nothing more is coming that the test waits for.
        return


def broker_env(pki: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPNS_")}
    env.update({
        "EPNS_BROKER_LISTENERS__PRIMARY__HOST": "127.0.0.1",
        "EPNS_BROKER_LISTENERS__PRIMARY__PORT": "0",
        "EPNS_BROKER_LISTENERS__FALLBACK__HOST": "127.0.0.1",
        "EPNS_BROKER_LISTENERS__FALLBACK__PORT": "0",
        "EPNS_BROKER_METRICS__PORT": "0",
        "EPNS_BROKER_TLS__CERT": str(pki / "broker.crt"),
        "EPNS_BROKER_TLS__KEY": str(pki / "broker.key"),
        "EPNS_BROKER_TLS__CA": str(pki / "ca.crt"),
        "EPNS_BROKER_IDENTITY__SERVER_PUBLIC_KEY": str(pki / "signing.pub"),
        "EPNS_BROKER_IDENTITY__REVOCATION_FILE": str(pki / "revoked.txt"),
        "EPNS_BROKER_IDENTITY__REVOCATION_CHECK_INTERVAL": "0.5",
    })
    env.update({f"EPNS_BROKER_{k.upper()}": v for k, v in overrides.items()})
    return env


def start_epns(pki: Path, *, command: list[str] | None = None,
               **overrides: str) -> BrokerProcess:
    """Start ``python -m broker`` (or ``command``, an installed epns-broker)
    and wait for its ready line."""
    process = subprocess.Popen(
        command or [sys.executable, "-m", "broker"], cwd=ROOT, env=broker_env(pki, **overrides),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=pump_stderr, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready = [line for line in lines if " ready ports=" in line]
        if ready:
            ports = dict(p.split(":") for p in ready[0].split("ports=")[1].split(","))
            metrics = [line for line in lines if " metrics url=" in line]
            metrics_port = int(metrics[0].rsplit(":", 1)[1].split("/")[0]) if metrics else None
            return BrokerProcess("epns", process, int(ports["primary"]),
                                 int(ports["fallback"]) if "fallback" in ports else None,
                                 metrics_port, lines)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("epns broker did not start:\n" + "\n".join(lines))


def render_mosquitto_conf(pki: Path, work: Path, port: int, fallback: int) -> Path:
    """The shipped contract config, with this test's paths and ports."""
    conf = (ROOT / "docker/mosquitto/mosquitto.conf").read_text()
    conf = conf.replace("/mosquitto/certs/", f"{pki}/")
    conf = conf.replace("/mosquitto/config/acl", str(work / "acl"))
    conf = conf.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    conf = conf.replace("listener 443\n", f"listener {fallback} 127.0.0.1\n")
    # Run as whoever runs the tests: Mosquitto started as root would switch to
    # the 'mosquitto' user, who cannot read the test's private temp files.
    conf += f"\nuser {getpass.getuser()}\n"
    shutil.copy(ROOT / "docker/mosquitto/acl", work / "acl")
    path = work / "mosquitto.conf"
    path.write_text(conf)
    return path


def start_mosquitto(pki: Path, work: Path, acl: str | None = None) -> BrokerProcess:
    """Start Debian's mosquitto with the shipped contract configuration (or
    with ``acl`` as its ACL file instead of the shipped one)."""
    port, fallback = free_port(), free_port()
    conf = render_mosquitto_conf(pki, work, port, fallback)
    if acl is not None:
        (work / "acl").write_text(acl)
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=pump_stderr, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return BrokerProcess("mosquitto", process, port, fallback, None, lines)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("mosquitto did not start:\n" + "\n".join(lines))


def start_stock_amqtt(pki: Path, max_connections: int = 0) -> BrokerProcess:
    """Start stock amqtt 0.12.1 with only epns's auth and ACL plugins (see
    ``tests/support/stock_amqtt.py``); the other settings have no stock equivalent."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.stock_amqtt", str(port), str(pki),
         str(max_connections)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=pump_stderr, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(" ready ports=" in line for line in lines):
            return BrokerProcess("stock-amqtt", process, port, None, None, lines)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("stock amqtt did not start:\n" + "\n".join(lines))
