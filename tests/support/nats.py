"""A real 3-node NATS cluster (Debian's ``nats-server``) with MQTT and
JetStream, every port on 127.0.0.1, its stores under the test's tmp_path."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from epns import nats_config, pki
from tests.support.processes import free_port, pump_stderr, stop_process, wait_for_line

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
CLUSTER = "epns"


@dataclass
class NatsNode:
    """One node: its name, ports, config file and (while it runs) its process."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int
    config: Path
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def start(self) -> None:
        assert NATS_SERVER is not None
        self.process = subprocess.Popen([NATS_SERVER, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        threading.Thread(target=pump_stderr, args=(self.process, self.lines),
                         daemon=True).start()

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to its clients or peers."""
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def healthy(self) -> bool:
        """``/healthz?js-enabled-only=true`` answers 200 (JetStream is up)."""
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def varz(self, endpoint: str = "varz") -> dict[str, object]:
        url = f"http://127.0.0.1:{self.monitor_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            result: dict[str, object] = json.loads(answer.read())
            return result

    def log_contains(self, pattern: str, timeout: float = 10.0) -> str:
        return wait_for_line(self.lines, pattern, timeout, what=f"nats {self.name}")


@dataclass
class NatsCluster:
    """Three nodes; ``mqtt_ports`` in node order."""

    nodes: list[NatsNode]
    pki_dir: Path
    work: Path

    def write_configs(self, agent_ids: Iterable[str], accounts: str | None = None) -> None:
        """Every node's config, with the accounts of ``agent_ids`` (or ``accounts``)."""
        accounts = accounts or nats_config.render_accounts(agent_ids)
        for node in self.nodes:
            store = self.work / f"{node.name}-js"
            store.mkdir(parents=True, exist_ok=True)
            peers = [p for p in self.nodes if p is not node]
            node.config.write_text(render_node(node, peers, self.pki_dir, store, accounts))

    def reload(self, agent_ids: Iterable[str], accounts: str | None = None) -> None:
        """New accounts for the fleet, applied by SIGHUP, as an operator would."""
        self.write_configs(agent_ids, accounts)
        for node in self.nodes:
            if node.process is not None:
                node.process.send_signal(signal.SIGHUP)

    @property
    def mqtt_ports(self) -> list[int]:
        return [node.mqtt_port for node in self.nodes]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every running node answers healthz and the MQTT streams can be made:
        JetStream's meta group has a leader."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.process is not None]
        while time.monotonic() < deadline:
            for node in running:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"nats {node.name} exited:\n" + "\n".join(node.lines))
            if all(node.healthy() for node in running) and self._meta_leader(running):
                return
            time.sleep(0.1)
        logs = "\n\n".join(f"{n.name}:\n" + "\n".join(n.lines) for n in running)
        raise RuntimeError("the NATS cluster did not become ready:\n" + logs)

    @staticmethod
    def _meta_leader(running: list[NatsNode]) -> bool:
        try:
            jsz = running[0].varz("jsz")
        except (urllib.error.URLError, OSError):
            return False
        meta = jsz.get("meta_cluster")
        return isinstance(meta, dict) and bool(meta.get("leader"))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def render_node(node: NatsNode, peers: Iterable[NatsNode], pki_dir: Path, store: Path,
                accounts: str) -> str:
    """One node's nats-server.conf: the cluster routes to its peers, an MQTT
    listener with TLS that maps client certificates to users, and the fleet's
    accounts."""
    routes = ", ".join(f'"nats-route://127.0.0.1:{p.cluster_port}"' for p in peers)
    return f"""server_name: "{node.name}"
listen: "127.0.0.1:{node.client_port}"
http: "127.0.0.1:{node.monitor_port}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 256MB
}}
cluster {{
  name: "{CLUSTER}"
  listen: "127.0.0.1:{node.cluster_port}"
  routes: [{routes}]
}}
mqtt {{
  listen: "127.0.0.1:{node.mqtt_port}"
  tls {{
    cert_file: "{pki_dir / pki.BROKER_CERT}"
    key_file: "{pki_dir / pki.BROKER_KEY}"
    ca_file: "{pki_dir / pki.CA_CERT}"
    verify_and_map: true
    timeout: 5
  }}
  stream_replicas: 3
  ack_wait: "5s"
}}
{accounts}"""


def start_cluster(pki_dir: Path, work: Path, agent_ids: Iterable[str],
                  accounts: str | None = None) -> NatsCluster:
    """Write the configs of three nodes for ``agent_ids`` (or with
    ``accounts`` as the accounts block) and start them."""
    work.mkdir(parents=True, exist_ok=True)
    nodes = [NatsNode(f"n{i}", free_port(), free_port(), free_port(), free_port(),
                      work / f"n{i}.conf") for i in (1, 2, 3)]
    cluster = NatsCluster(nodes, pki_dir, work)
    cluster.write_configs(agent_ids, accounts)
    for node in nodes:
        node.start()
    try:
        cluster.wait_ready()
    except RuntimeError:
        cluster.stop()
        raise
    return cluster
