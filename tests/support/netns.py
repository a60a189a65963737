"""Real middleboxes between an agent and its server, in network namespaces
the test creates and deletes: an agent host, a router (iptables, Squid, NAT)
and a server host. Loopback hides middleboxes; this does not.

Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking) and are assigned
only inside these namespaces; nothing is routed to the host's uplink (the
namespaces have no link to it). Every namespace is deleted at the end, with
whatever still runs in it.

    agent 198.18.1.2 ── 198.18.1.1 router 198.18.2.1 ── 198.18.2.2 server
          2001:2:0:1::2    2001:2:0:1::1  2001:2:0:2::1    2001:2:0:2::2

Both families, so that IPv6-only and IPv4-only paths can be made: the IPv6
addresses are from 2001:2::/48 (RFC 5180, benchmarking), likewise only in
here. The agent host resolves ``push.lab`` to the server's two addresses
(its own /etc/hosts: ``ip netns exec`` mounts /etc/netns/NAME/hosts).

The test process stays in the host namespace; it reaches the server's API
through a Unix socket (file systems are not namespaced) that a forwarder
inside the server's namespace relays to the API port.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

AGENT_IP = "198.18.1.2"
ROUTER_AGENT_SIDE = "198.18.1.1"
ROUTER_SERVER_SIDE = "198.18.2.1"
SERVER_IP = "198.18.2.2"
AGENT_IP6 = "2001:2:0:1::2"
ROUTER_AGENT_SIDE6 = "2001:2:0:1::1"
ROUTER_SERVER_SIDE6 = "2001:2:0:2::1"
SERVER_IP6 = "2001:2:0:2::2"
# The server's name on the agent host: IPv6 first, as getaddrinfo orders it.
SERVER_NAME = "push.lab"

_serial = itertools.count()


def available() -> str | None:
    """None when namespaces can be made here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (.ci/run installs it)"
    probe = f"epns-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Topology:
    """Three namespaces and two links; ``prefix`` makes the names unique."""

    prefix: str = field(default_factory=lambda: f"ep{os.getpid() % 10000}n{next(_serial)}")
    processes: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = field(
        default_factory=list)
    # The iptables rule ``impair`` added, if it used one.
    loss_rule: tuple[str, ...] | None = None

    @property
    def agent(self) -> str:
        return f"{self.prefix}a"

    @property
    def router(self) -> str:
        return f"{self.prefix}r"

    @property
    def server(self) -> str:
        return f"{self.prefix}s"

    def create(self) -> Topology:
        """Make the namespaces, links, addresses and routes."""
        for name in (self.agent, self.router, self.server):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        self._link(self.agent, (AGENT_IP, AGENT_IP6), self.router,
                   (ROUTER_AGENT_SIDE, ROUTER_AGENT_SIDE6), "1")
        self._link(self.server, (SERVER_IP, SERVER_IP6), self.router,
                   (ROUTER_SERVER_SIDE, ROUTER_SERVER_SIDE6), "2")
        for host, gateway, gateway6 in ((self.agent, ROUTER_AGENT_SIDE, ROUTER_AGENT_SIDE6),
                                        (self.server, ROUTER_SERVER_SIDE, ROUTER_SERVER_SIDE6)):
            _ip("-n", host, "route", "add", "default", "via", gateway)
            _ip("-n", host, "-6", "route", "add", "default", "via", gateway6)
        self.run_in(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run_in(self.router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        hosts = self.hosts_dir / "hosts"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n"
                         f"{SERVER_IP6} {SERVER_NAME}\n{SERVER_IP} {SERVER_NAME}\n")
        return self

    @property
    def hosts_dir(self) -> Path:
        """/etc/netns/<agent>: ``ip netns exec`` mounts its files over /etc."""
        return Path("/etc/netns") / self.agent

    def _link(self, host: str, host_ips: tuple[str, str], router: str,
              router_ips: tuple[str, str], tag: str) -> None:
        near, far = f"{self.prefix}h{tag}", f"{self.prefix}r{tag}"
        _ip("link", "add", near, "type", "veth", "peer", "name", far)
        _ip("link", "set", near, "netns", host)
        _ip("link", "set", far, "netns", router)
        _ip("-n", host, "addr", "add", f"{host_ips[0]}/24", "dev", near)
        _ip("-n", router, "addr", "add", f"{router_ips[0]}/24", "dev", far)
        # nodad: usable at once, not after duplicate address detection.
        _ip("-n", host, "addr", "add", f"{host_ips[1]}/64", "dev", near, "nodad")
        _ip("-n", router, "addr", "add", f"{router_ips[1]}/64", "dev", far, "nodad")
        _ip("-n", host, "link", "set", near, "up")
        _ip("-n", router, "link", "set", far, "up")

    def readdress_agent(self, new_ip: str) -> None:
        """Give the agent host a new address and take the old one away, as a
        new DHCP lease does: its open connections are left without a source."""
        device = f"{self.prefix}h1"
        # The old one first: deleting a primary address deletes its secondaries.
        _ip("-n", self.agent, "addr", "del", f"{AGENT_IP}/24", "dev", device)
        _ip("-n", self.agent, "addr", "add", f"{new_ip}/24", "dev", device)
        _ip("-n", self.agent, "route", "replace", "default", "via", ROUTER_AGENT_SIDE)

    def exec_prefix(self, namespace: str) -> list[str]:
        """The argv prefix that runs a command inside ``namespace``."""
        return ["ip", "netns", "exec", namespace]

    def run_in(self, namespace: str, *argv: str) -> str:
        """Run a command inside ``namespace`` to completion; its stdout."""
        done = subprocess.run([*self.exec_prefix(namespace), *argv], capture_output=True,
                              text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {namespace}: {done.stderr.strip()}")
        return done.stdout

    def iptables(self, *rule: str) -> None:
        """One iptables command in the router."""
        self.run_in(self.router, "iptables", *rule)

    def ip6tables(self, *rule: str) -> None:
        """One ip6tables command in the router."""
        self.run_in(self.router, "ip6tables", *rule)

    def forget_idle_flows_after(self, seconds: int | None) -> None:
        """Make the router a NAT that forgets an idle TCP flow after
        ``seconds`` (conntrack's established timeout) and drops what comes
        after as INVALID, as home routers and carrier NATs do; None restores
        conntrack's default (5 days) and plain routing."""
        if seconds is None:
            self.run_in(self.router, "sysctl", "-qw",
                        "net.netfilter.nf_conntrack_tcp_timeout_established=432000")
            return
        self.iptables("-t", "nat", "-A", "POSTROUTING", "-s", f"{AGENT_IP.rsplit('.', 1)[0]}.0/24",
                      "-j", "MASQUERADE")
        self.iptables("-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
        # No loose pick-up: a packet of a forgotten flow is INVALID, not a new flow.
        self.run_in(self.router, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")
        self.run_in(self.router, "sysctl", "-qw",
                    f"net.netfilter.nf_conntrack_tcp_timeout_established={seconds}")

    def impair(self, loss_percent: float | None) -> str:
        """The router loses ``loss_percent`` % of the packets it forwards, both
        ways, as a bad radio link does; None takes the loss away. netem on
        both router-side links where the kernel has it, else the same loss
        with iptables' (and ip6tables') statistic match on FORWARD (kernels built without
        CONFIG_NET_SCH_NETEM, as this project's machines are). Returns which."""
        if loss_percent is None:
            self._unimpair()
            return ""
        try:
            for device in self._router_devices():
                self.run_in(self.router, "tc", "qdisc", "replace", "dev", device, "root",
                            "netem", "loss", f"{loss_percent:g}%")
        except RuntimeError:
            pass  # no netem in this kernel (or no tc): iptables does the same
        else:
            return "tc netem"
        self.loss_rule = ("FORWARD", "-m", "statistic", "--mode", "random", "--probability",
                          f"{loss_percent / 100:g}", "-j", "DROP")
        # Both families: the lab is dual-stack.
        self.iptables("-I", *self.loss_rule)
        self.ip6tables("-I", *self.loss_rule)
        return "iptables statistic"

    def _router_devices(self) -> tuple[str, str]:
        return f"{self.prefix}r1", f"{self.prefix}r2"

    def _unimpair(self) -> None:
        # Absent already is fine: a test may never have set one, and the
        # matrix flushes iptables between tests.
        for device in self._router_devices():
            subprocess.run([*self.exec_prefix(self.router), "tc", "qdisc", "del", "dev", device,
                            "root"], capture_output=True, check=False, timeout=30)
        if self.loss_rule is not None:
            for tool in ("iptables", "ip6tables"):
                subprocess.run([*self.exec_prefix(self.router), tool, "-D", *self.loss_rule],
                               capture_output=True, check=False, timeout=30)
            self.loss_rule = None

    def forward_only(self, *ports: int) -> None:
        """The router forwards agent-to-server TCP only to ``ports`` (and the
        answers); everything else from the agent is dropped silently."""
        self.iptables("-P", "FORWARD", "DROP")
        self.iptables("-A", "FORWARD", "-m", "conntrack", "--ctstate",
                      "ESTABLISHED,RELATED", "-j", "ACCEPT")
        for port in ports:
            self.iptables("-A", "FORWARD", "-s", AGENT_IP, "-d", SERVER_IP, "-p", "tcp",
                          "--dport", str(port), "-j", "ACCEPT")

    def start(self, namespace: str, argv: list[str], **popen: object) -> subprocess.Popen[str]:
        """Start a long-running process inside ``namespace``; it is killed at
        ``delete`` if the test has not stopped it."""
        process: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            [*self.exec_prefix(namespace), *argv], **popen)
        self.processes.append(process)
        return process

    def delete(self) -> None:
        """Kill what runs inside, and delete the namespaces (links go with them)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            for stream in {process.stdout, process.stderr} - {None}:
                stream.close()  # type: ignore[union-attr]
        for name in (self.agent, self.router, self.server):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(self.hosts_dir, ignore_errors=True)
