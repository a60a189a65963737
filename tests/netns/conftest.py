"""The lab of the firewall matrix: an agent host, a router and a server host
in network namespaces (``tests.support.netns``), the epns broker (8883, 443)
and server (9443) on the server host, real agents on the agent host, and
Squid with Debian's stock CONNECT policy on the router when a test asks.

One lab per module: the broker and server are started once, and each test
sets the router's rules (flushed before every test) and starts its own agent.
Each test adds a row to ``MATRIX``, printed at the end of the module.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from epns import pki
from tests.support import netns, nginx
from tests.support.agents import AgentProcess, write_agent_config
from tests.support.processes import (
    ROOT,
    broker_env,
    pump_stderr,
    stop_process,
    wait_for_line,
    wait_until,
)
from tests.support.server import ServerProcess, request_wakeup, server_env

WHY_NOT = netns.available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

HTTPS_PORT = 9443
PRIMARY, FALLBACK = 8883, 443
SQUID_PORT = 3128
PROXY_USER, PROXY_PASSWORD = "fleet", "s3cret"
MATRIX: list[dict[str, Any]] = []


@dataclass
class Lab:
    """A running lab; see the module docstring."""

    net: netns.Topology
    pki: Path
    work: Path
    server: ServerProcess
    api_socket: Path
    token: str
    broker_lines: list[str]
    squid: subprocess.Popen[str] | None = None
    agents: list[AgentProcess] = field(default_factory=list)
    squid_dirs: list[Path] = field(default_factory=list)
    broker: subprocess.Popen[str] | None = None
    # Other proxies a test starts (tinyproxy, mitmproxy): stopped at reset.
    middleboxes: list[subprocess.Popen[str]] = field(default_factory=list)

    def api(self) -> httpx.Client:
        """An API client, through the Unix socket into the server's namespace."""
        context = ssl.create_default_context(cafile=str(self.pki / pki.CA_CERT))
        transport = httpx.HTTPTransport(uds=str(self.api_socket), verify=context)
        return httpx.Client(base_url=f"https://127.0.0.1:{HTTPS_PORT}", transport=transport,
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=15)

    def start_agent(self, agent_id: str, **sections: dict[str, Any]) -> AgentProcess:
        """Create the agent (server CLI) and run it on the agent host, with
        the product's default timeouts and keep-alives unless told."""
        bundle = self.work / "agents" / agent_id
        self.server.cli("agent", "create", agent_id, "--out", str(bundle))
        # The bundle's sync URLs: the HTTPS port, then the broker's one port.
        bundled = tomllib.loads((bundle / "agent.toml").read_text())["sync"]
        sync = {"action": "http", "url": bundled["url"], "backup_urls": bundled["backup_urls"],
                "fetch": True, "ca": str(bundle / "ca.crt"), "interval": 3600.0}
        sync.update(sections.pop("sync", {}))
        broker = {"host": netns.SERVER_IP, **sections.pop("broker", {})}
        config = write_agent_config(
            self.work / f"{agent_id}.toml", self.pki, agent_id, [PRIMARY, FALLBACK],
            identity={"cert": str(bundle / "agent.crt"), "key": str(bundle / "agent.key")},
            broker=broker, sync=sync,
            # The product's defaults: the matrix measures what a fleet gets.
            timeouts={"tcp_connect": 5.0, "proxy_connect": 10.0, "tls_handshake": 10.0,
                      "connack": 10.0},
            **sections)
        process = self.net.start(self.net.agent, [sys.executable, "-m", "agent_push", "run",
                                                   "--config", str(config)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        agent = AgentProcess(process, config)
        threading.Thread(target=pump_stderr, args=(process, agent.lines), daemon=True).start()
        self.agents.append(agent)
        return agent

    def wake(self, agent_id: str) -> str:
        with self.api() as api:
            return request_wakeup(api, agent_id)

    def satisfied(self, wakeup_id: str, timeout: float) -> float | None:
        """Seconds from request to satisfied (server clock), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.api() as api:
                target = api.get(f"/api/v1/wakeups/{wakeup_id}").json()["targets"][0]
            if target["state"] == "satisfied":
                took: float = target["satisfied_at"] - target["requested_at"]
                return took
            time.sleep(0.2)
        return None

    def start_nginx(self, port: int) -> None:
        """Debian's nginx on the server host, ending TLS on ``port`` with the
        shipped site config: /mqtt to the broker's ws-front socket, the rest
        to the server's front socket."""
        assert nginx.BINARY is not None
        where = self.work / "nginx"
        where.mkdir(exist_ok=True)
        conf = nginx.write_conf(where, nginx.render_site(self.pki, self.work,
                                                         f"{netns.SERVER_IP}:{port}"))
        self.middleboxes.append(self.net.start(
            self.net.server, [nginx.BINARY, "-c", str(conf)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True))
        if not self.listening(self.net.server, netns.SERVER_IP, port, 10):
            raise RuntimeError(f"nginx did not start: {(where / 'error.log').read_text()}")

    def start_squid(self) -> str:
        """Squid on the router, Debian's stock CONNECT policy (CONNECT to
        SSL_ports, 443, only: its lines are read from /etc/squid/squid.conf)
        plus Basic auth; returns the proxy URL with credentials."""
        stock = Path("/etc/squid/squid.conf").read_text()
        policy = [line for line in stock.splitlines()
                  if re.match(r"(acl (SSL_ports|Safe_ports|CONNECT) |"
                              r"http_access deny (!Safe_ports|CONNECT !SSL_ports))", line)]
        assert "http_access deny CONNECT !SSL_ports" in policy
        # Squid drops root for its own user, which cannot enter pytest's 0700
        # temporary folders: its files live in one it may enter.
        where = Path(tempfile.mkdtemp(prefix="epns-squid-"))
        self.squid_dirs.append(where)
        where.chmod(0o777)
        digest = subprocess.run(["openssl", "passwd", "-apr1", PROXY_PASSWORD],
                                capture_output=True, text=True, check=True).stdout.strip()
        (where / "passwd").write_text(f"{PROXY_USER}:{digest}\n")
        (where / "passwd").chmod(0o644)
        conf = where / "squid.conf"
        conf.write_text("\n".join([
            *policy,
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth " + str(where / "passwd"),
            "auth_param basic realm epns-lab",
            "acl fleet proxy_auth REQUIRED",
            "http_access allow fleet",
            "http_access deny all",
            f"http_port {netns.ROUTER_AGENT_SIDE}:{SQUID_PORT}",
            f"pid_filename {where / 'squid.pid'}",
            f"access_log stdio:{where / 'access.log'}",
            f"cache_log {where / 'cache.log'}",
            "cache deny all", "shutdown_lifetime 0 seconds", "coredump_dir " + str(where),
        ]) + "\n")
        self.squid = self.net.start(self.net.router, ["squid", "-N", "-f", str(conf)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = subprocess.run([*self.net.exec_prefix(self.net.router), "bash", "-c",
                                    f"exec 3<>/dev/tcp/{netns.ROUTER_AGENT_SIDE}/{SQUID_PORT}"],
                                   capture_output=True, check=False)
            if probe.returncode == 0:
                return (f"http://{PROXY_USER}:{PROXY_PASSWORD}@{netns.ROUTER_AGENT_SIDE}:"
                        f"{SQUID_PORT}")
            time.sleep(0.2)
        log = where / "cache.log"
        raise RuntimeError("squid did not start: "
                           + (log.read_text()[-2000:] if log.exists() else "no cache.log"))

    def stop_squid(self) -> None:
        if self.squid is not None and self.squid.poll() is None:
            self.squid.kill()
            self.squid.wait(timeout=10)
        self.squid = None

    def broker_log(self, pattern: str, timeout: float = 5.0) -> str:
        """The broker's log line that matches ``pattern`` (regex)."""
        return wait_for_line(self.broker_lines, pattern, timeout, what="broker")

    def stop_broker(self) -> None:
        """Stop the broker as a service manager does (SIGTERM)."""
        if self.broker is not None:
            stop_process(self.broker)
        self.broker = None

    def start_broker(self) -> None:
        """Start the broker again (after ``stop_broker``); returns once it listens."""
        self.broker, self.broker_lines = _start_broker(self.net, self.pki, self.work)

    def listening(self, namespace: str, address: str, port: int, timeout: float) -> bool:
        """Whether something accepts TCP on ``address:port`` from inside
        ``namespace`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run([*self.net.exec_prefix(namespace), "bash", "-c",
                                    f"exec 3<>/dev/tcp/{address}/{port}"],
                                   capture_output=True, check=False)
            if probe.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def stop_middleboxes(self) -> None:
        for process in self.middleboxes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.middleboxes.clear()

    def reset(self) -> None:
        """Between tests: no agents, no proxy, an open router."""
        for agent in self.agents:
            agent.stop()
        self.agents.clear()
        self.stop_squid()
        self.stop_middleboxes()
        self.net.impair(None)
        if self.broker is None:
            self.start_broker()
        self.net.iptables("-F")
        self.net.iptables("-t", "nat", "-F")
        self.net.iptables("-P", "FORWARD", "ACCEPT")
        self.net.ip6tables("-F")
        self.net.ip6tables("-P", "FORWARD", "ACCEPT")
        self.net.forget_idle_flows_after(None)


def _start_broker(net: netns.Topology, certs: Path, work: Path
                  ) -> tuple[subprocess.Popen[str], list[str]]:
    # 443 is one port for everything: its HTTPS goes to the server's front
    # socket (the server's state_dir is ``work``), as in the all-in-one.
    # "::": both families, for the IPv6-only and IPv4-only rows.
    env = broker_env(certs, listeners__primary__host="::",
                     listeners__primary__port=str(PRIMARY),
                     listeners__fallback__host="::",
                     listeners__fallback__port=str(FALLBACK),
                     listeners__fallback__http_upstream=str(work / "front.sock"),
                     # For nginx in front (the nginx row): MQTT over WebSocket.
                     listeners__front__enabled="true",
                     listeners__front__unix_socket=str(work / "broker-front.sock"))
    process = net.start(net.server, [sys.executable, "-m", "broker"], cwd=ROOT, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=pump_stderr, args=(process, lines), daemon=True).start()
    wait_for_line(lines, r" ready ports=", 20, what="broker")
    return process, lines


def _start_server(net: netns.Topology, certs: Path, work: Path) -> ServerProcess:
    env = server_env(certs, work, PRIMARY, HTTPS_PORT,
                     http__host="::",
                     http__public_url=f"https://{netns.SERVER_IP}:{HTTPS_PORT}",
                     mqtt__agent_host=netns.SERVER_IP)
    process = net.start(net.server, [sys.executable, "-m", "server_push", "run"], cwd=ROOT,
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(process, f"https://{netns.SERVER_IP}:{HTTPS_PORT}", env,
                           certs / pki.CA_CERT)
    # stdout carries the welcome text and stderr the log: one stream, in order.
    process.stderr = process.stdout
    threading.Thread(target=pump_stderr, args=(process, server.lines), daemon=True).start()
    server.log_contains(r" ready url=", timeout=30)
    server.log_contains(r"broker_link_up", timeout=30)
    return server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("lab")
    certs = work / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1", netns.SERVER_IP, netns.SERVER_NAME))
    net = netns.Topology().create()
    try:
        broker, broker_lines = _start_broker(net, certs, work)
        server = _start_server(net, certs, work)
        api_socket = work / "api.sock"
        net.start(net.server, [sys.executable, "-m", "tests.support.uds_forward",
                               str(api_socket), "127.0.0.1", str(HTTPS_PORT)], cwd=ROOT)
        wait_until(api_socket.exists, f"the API socket {api_socket}", timeout=10)
        token = server.api_token("matrix")
        lab = Lab(net, certs, work, server, api_socket, token, broker_lines, broker=broker)
        yield lab
        lab.reset()
        for folder in lab.squid_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        net.delete()
        if MATRIX:
            sys.stderr.write("\n" + render(MATRIX) + "\n")
            (work / "matrix.json").write_text(json.dumps(MATRIX, indent=1) + "\n")


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    lab.reset()
    yield lab
    lab.reset()


def render(rows: list[dict[str, Any]]) -> str:
    """The matrix as a Markdown table."""
    head = "| condition | connected after | route | wake-up -> satisfied |\n|---|---|---|---|"
    body = [f"| {r['condition']} | {r['connected']} | {r['route']} | {r['satisfied']} |"
            for r in rows]
    return "\n".join([head, *body])
