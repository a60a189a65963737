"""Scale-out on a 3-node NATS cluster (MQTT + JetStream): the agents and the
server run unchanged, only their configuration says where the nodes are.

Every process is real: Debian's nats-server on loopback ports, the management
server, ``epns-agent`` processes, and paho clients for the permission checks.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from epns import nats_config, pki, topics
from epns.envelope import PresenceState, decode_presence
from tests.server.conftest import Stack
from tests.support import clients
from tests.support.agents import AgentProcess
from tests.support.nats import NATS_SERVER, NatsCluster, start_cluster
from tests.support.processes import BrokerProcess
from tests.support.server import start_server

pytestmark = [
    pytest.mark.nats,
    pytest.mark.skipif(NATS_SERVER is None,
                       reason="nats-server is not installed (apt-get install nats-server)"),
]

AGENTS = ("a1", "a2", "a3", "a4")


@dataclass
class NatsStack:
    """The cluster, a server on ``server_node`` (the others as its fallbacks),
    and a ``Stack`` for the API helpers."""

    cluster: NatsCluster
    stack: Stack

    def ports_from(self, node: int) -> list[int]:
        """The MQTT ports, node ``node`` first: the order an agent tries them."""
        ports = self.cluster.mqtt_ports
        return ports[node:] + ports[:node]

    def start_agent(self, agent_id: str, node: int, groups: tuple[str, ...] = ()
                    ) -> AgentProcess:
        """An agent whose first route is ``node``; the other nodes follow."""
        return self.stack.start_agent(agent_id, groups, broker={"ports": self.ports_from(node)})

    def node_of(self, agent: AgentProcess) -> int:
        """The node the agent connected to last, from its own log."""
        routes = [m.group(1) for line in list(agent.lines)
                  if (m := re.search(r" connected route=direct:(\d+)", line))]
        assert routes, "\n".join(agent.lines)
        return self.cluster.mqtt_ports.index(int(routes[-1]))


def _server_overrides(cluster: NatsCluster, node: int) -> dict[str, str]:
    others = [p for i, p in enumerate(cluster.mqtt_ports) if i != node]
    return {"mqtt__fallbacks": ",".join(f"127.0.0.1:{p}" for p in others),
            "mqtt__agent_ports": ",".join(map(str, cluster.mqtt_ports))}


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsStack]:
    """A cluster whose accounts list ``AGENTS``, and a server on node 0."""
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    cluster = start_cluster(certs, tmp_path / "nats", AGENTS)
    work = tmp_path / "server"
    work.mkdir()
    overrides = _server_overrides(cluster, 0)
    server = None
    stack = None
    try:
        server = start_server(certs, work, cluster.mqtt_ports[0], **overrides)
        server.log_contains(r"broker_link_up", timeout=20)
        token = server.api_token()
        node = cluster.nodes[0]
        assert node.process is not None
        broker = BrokerProcess("nats", node.process, node.mqtt_port)
        stack = Stack(certs, work, broker, server, token, server_overrides=overrides)
        yield NatsStack(cluster, stack)
    finally:
        _dump(tmp_path, cluster, stack)
        if stack is not None:
            for agent in stack.agents:
                agent.stop()
            stack.server.stop()
        elif server is not None:
            server.stop()
        cluster.stop()


def _dump(tmp_path: Path, cluster: NatsCluster, stack: Stack | None) -> None:
    """Every process's log, into tmp_path, for the failure report."""
    for node in cluster.nodes:
        (tmp_path / f"{node.name}.log").write_text("\n".join(node.lines))
    if stack is not None:
        (tmp_path / "server.log").write_text("\n".join(stack.server.lines))
        for agent in stack.agents:
            (tmp_path / f"{agent.config.stem}.log").write_text("\n".join(agent.lines))


def _wake(stack: Stack, **body: object) -> str:
    with stack.api() as api:
        answer = api.post("/api/v1/wakeups", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _online(nats: NatsStack, agent: AgentProcess) -> None:
    agent.log_contains(r"sync_done .*reason=connect", timeout=20)


def test_agents_on_other_nodes_than_the_server_are_woken(nats: NatsStack) -> None:
    stack = nats.stack
    a1 = nats.start_agent("a1", node=1, groups=("lab",))
    a2 = nats.start_agent("a2", node=2, groups=("lab",))
    for agent in (a1, a2):
        _online(nats, agent)
    # The server is on node 0; each agent on a node of its own.
    assert (nats.node_of(a1), nats.node_of(a2)) == (1, 2)
    one = _wake(stack, agents=["a1"])
    group = _wake(stack, group="lab")
    everyone = _wake(stack, all=True)
    stack.wait_wakeup(one, "satisfied", timeout=20)
    stack.wait_wakeup(group, "satisfied", count=2, timeout=20)
    stack.wait_wakeup(everyone, "satisfied", count=2, timeout=20)
    assert a1.count(r"command_accepted .*type=wake") == 3
    assert a2.count(r"command_accepted .*type=wake") == 2


def test_a_killed_node_loses_no_wakeup(nats: NatsStack) -> None:
    """Node 1 dies with SIGKILL under two agents: they reconnect to the other
    nodes with backoff, and the wake-ups asked before, while and after all
    reach satisfied, each acknowledged once per agent."""
    stack = nats.stack
    agents = {"a1": nats.start_agent("a1", node=1), "a2": nats.start_agent("a2", node=1),
              "a3": nats.start_agent("a3", node=2)}
    for agent in agents.values():
        _online(nats, agent)
    assert [nats.node_of(a) for a in agents.values()] == [1, 1, 2]
    ids = list(agents)
    before = _wake(stack, agents=ids)
    stack.wait_wakeup(before, "satisfied", count=3, timeout=20)
    marks = {name: len(agent.lines) for name, agent in agents.items()}

    nats.cluster.nodes[1].kill()
    during = _wake(stack, agents=ids)
    for name in ("a1", "a2"):
        agent = agents[name]
        agent.log_contains(r"disconnected ", after=marks[name], timeout=10)
        agent.log_contains(r"reconnect_scheduled delay=", after=marks[name], timeout=10)
        agent.log_contains(r"connected route=direct:", after=marks[name], timeout=30)
    stack.wait_wakeup(during, "satisfied", count=3, timeout=40)
    assert nats.node_of(agents["a1"]) != 1
    assert nats.node_of(agents["a2"]) != 1
    after = _wake(stack, agents=ids)
    stack.wait_wakeup(after, "satisfied", count=3, timeout=20)

    for wakeup in (before, during, after):
        counts = stack.wakeup(wakeup)["counts"]
        assert counts["satisfied"] == 3, counts
        assert sum(counts.values()) == 3, counts
    # The commands themselves arrive too, late for a consumer whose leader
    # was on the dead node: JetStream elects a new one within seconds.
    for agent in agents.values():
        _wait_count(agent, r"command_accepted .*type=wake", 3, timeout=30)


def _wait_count(agent: AgentProcess, pattern: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while agent.count(pattern) < count:
        assert time.monotonic() < deadline, "\n".join(agent.lines)
        time.sleep(0.2)


def test_the_server_follows_its_node_dying(nats: NatsStack) -> None:
    """The server's node dies: it moves to a fallback, still wakes the agents,
    and the retained presence (a JetStream stream, replicated) survives."""
    stack = nats.stack
    agents = [nats.start_agent("a1", node=1), nats.start_agent("a2", node=2)]
    for agent in agents:
        _online(nats, agent)
    mark = len(stack.server.lines)
    nats.cluster.nodes[0].kill()
    during = _wake(stack, agents=["a1", "a2"])
    stack.server.log_contains(r"broker_link_down", after=mark, timeout=15)
    up = stack.server.log_contains(r"broker_link_up", after=mark, timeout=30)
    assert f":{nats.cluster.mqtt_ports[0]}" not in up
    stack.wait_wakeup(during, "satisfied", count=2, timeout=30)
    after = _wake(stack, agents=["a1", "a2"])
    stack.wait_wakeup(after, "satisfied", count=2, timeout=20)
    # The retained births outlive the node (a replicated JetStream stream): a
    # new subscriber on a surviving node gets both, flagged retained.
    probe = clients.connect(nats.cluster.mqtt_ports[2], stack.pki, "probe",
                            cert=(stack.pki / pki.SERVER_CERT, stack.pki / pki.SERVER_KEY))
    # Until JetStream has re-elected what the dead node led, a QoS 1
    # SUBSCRIBE may be refused (0x80): the probe asks again.
    deadline = time.monotonic() + 20
    while probe.subscribe("epns/v1/agents/+/presence") != [1]:
        assert time.monotonic() < deadline, "the subscription is still refused"
        time.sleep(0.5)
    births = {probe.expect(timeout=10) for _ in agents}
    assert {b.topic for b in births} == {topics.agent_presence(a) for a in ("a1", "a2")}
    assert all(b.retain for b in births)
    assert {decode_presence(b.payload).state for b in births} == {PresenceState.ONLINE}


def test_agents_are_held_to_their_own_topics(nats: NatsStack) -> None:
    certs = nats.stack.pki
    ca = pki.Pair(certs / pki.CA_CERT, certs / pki.CA_KEY)
    for agent_id in ("a1", "a2"):
        pki.create_client_cert(ca, pki.agent_pair(certs, agent_id), agent_id)
    ports = nats.cluster.mqtt_ports
    # Not the running server's client id: NATS would hand its session over.
    server = clients.connect(ports[0], certs, "probe",
                             cert=(certs / pki.SERVER_CERT, certs / pki.SERVER_KEY))
    for topic in ("epns/v1/agents/+/presence", "epns/v1/agents/+/evt"):
        assert server.subscribe(topic) == [1]
    victim = clients.connect(ports[1], certs, "a2", cert=clients.agent_files(certs, "a2"),
                             clean=False)
    assert victim.subscribe(topics.agent_cmd("a2")) == [1]
    intruder = clients.connect(ports[2], certs, "a1", cert=clients.agent_files(certs, "a1"),
                               clean=False)
    assert intruder.subscribe(topics.agent_cmd("a1")) == [1]
    assert intruder.subscribe(topics.ALL_CMD) == [1]
    for refused in (topics.agent_cmd("a2"), "epns/v1/agents/+/cmd", "#", "$MQTT/sub/#",
                    topics.agent_presence("a2"), topics.agent_evt("a2")):
        assert intruder.subscribe(refused) == [0x80], refused
    # Publishes outside its own evt and presence never reach anyone.
    intruder.publish(topics.agent_presence("a2"), b"forged", retain=True)
    intruder.publish(topics.agent_evt("a2"), b"forged")
    intruder.publish(topics.agent_cmd("a2"), b"forged")
    intruder.publish(topics.ALL_CMD, b"forged")
    victim.expect_none(wait=1.5)
    server.expect_none(wait=0.5)
    # Its own topics work, across nodes.
    intruder.publish(topics.agent_presence("a1"), b"online")
    got = server.expect(timeout=5)
    assert (got.topic, got.payload) == (topics.agent_presence("a1"), b"online")
    # A certificate decides who a client is: claiming the server's user name
    # with an agent's certificate is refused at CONNACK.
    clients.connect(ports[0], certs, "a1x", cert=clients.agent_files(certs, "a1"),
                    token="x", username="OU=epns-server,CN=epns-server",
                    expect_rc=5).close()
    # Nor does the NATS client port admit the fleet's users without a
    # certificate: they are MQTT-only (allowed_connection_types).
    assert "Authorization Violation" in _nats_login(nats.cluster.nodes[0].client_port,
                                                    "OU=epns-server,CN=epns-server")


def _nats_login(port: int, user: str) -> str:
    """CONNECT to a NATS client port as ``user``, without a password; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.recv(4096)  # INFO
        connect = json.dumps({"verbose": False, "pedantic": False, "user": user})
        sock.sendall(f"CONNECT {connect}\r\nPING\r\n".encode())
        return sock.recv(4096).decode()


def test_a_revoked_agent_is_shut_out_by_a_reload(nats: NatsStack) -> None:
    """Revoking on NATS: the agent's user leaves the accounts block and every
    node reloads (SIGHUP); its connection is closed and it cannot come back."""
    certs = nats.stack.pki
    ca = pki.Pair(certs / pki.CA_CERT, certs / pki.CA_KEY)
    pki.create_client_cert(ca, pki.agent_pair(certs, "a1"), "a1")
    agent = clients.connect(nats.cluster.mqtt_ports[1], certs, "a1",
                            cert=clients.agent_files(certs, "a1"), clean=False)
    assert agent.subscribe(topics.agent_cmd("a1")) == [1]
    nats.cluster.reload([a for a in AGENTS if a != "a1"])
    agent.disconnects.get(timeout=10)
    agent.close()
    for port in nats.cluster.mqtt_ports:
        clients.connect(port, certs, "a1", cert=clients.agent_files(certs, "a1"),
                        expect_rc=5).close()


def test_a_refused_subscription_ends_the_servers_session(tmp_path: Path) -> None:
    """A session whose SUBSCRIBE the broker refused would be deaf (a NATS node
    refuses while JetStream re-elects after a node died): the server drops it
    and tries again until the subscriptions are granted. Here the refusal is
    made by permissions, then lifted by a reload."""
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    granted = nats_config.render_accounts(AGENTS)
    deaf = granted.replace('"epns.v1.agents.*.evt",', "")
    assert deaf != granted
    cluster = start_cluster(certs, tmp_path / "nats", AGENTS, accounts=deaf)
    work = tmp_path / "server"
    work.mkdir()
    server = start_server(certs, work, cluster.mqtt_ports[0],
                          **_server_overrides(cluster, 0))
    try:
        server.log_contains(r"broker_link_down .*refused the subscription epns/v1/agents/\+/evt",
                            timeout=20)
        assert not any("broker_link_up" in line for line in server.lines)
        mark = len(server.lines)
        cluster.reload(AGENTS, accounts=granted)
        server.log_contains(r"broker_link_up", after=mark, timeout=40)
    finally:
        server.stop()
        cluster.stop()


def test_an_agent_refused_its_commands_comes_back_until_they_are_granted(
        nats: NatsStack) -> None:
    """An agent connected but refused its own command topic would never be
    woken: it leaves and reconnects with backoff until the broker grants it,
    instead of staying connected and deaf.
    (Mosquitto 2.0 grants a 3.1.1 SUBSCRIBE its ACL denies and then delivers
    nothing, so the refusal is made by NATS permissions, then lifted.)"""
    granted = nats_config.render_accounts(AGENTS)
    deaf = granted.replace('"epns.v1.agents.a1.cmd",', "")
    assert deaf != granted
    nats.cluster.reload(AGENTS, accounts=deaf)
    a1 = nats.start_agent("a1", node=1)
    a1.log_contains(r"subscribe_refused filters=epns/v1/agents/a1/cmd", timeout=20)
    a1.log_contains(r"disconnected .*refused the subscription to this agent's commands")
    # A session opened while the nodes reload their accounts stays in the old
    # account and hears nothing (NATS 2.9): lift the refusal only while the
    # agent waits out a backoff delay long enough for the reload to be done.
    _wait_for_backoff(a1, at_least=1.5)
    mark = len(a1.lines)
    nats.cluster.reload(AGENTS, accounts=granted)
    a1.log_contains(r"sync_done .*reason=connect", after=mark, timeout=60)
    refusals = a1.count(r"subscribe_refused")
    assert refusals >= 2  # it kept trying, with backoff, while refused
    time.sleep(1.0)
    assert a1.count(r"subscribe_refused") == refusals  # and stays once granted
    # Not asserted: a wake-up to this session after the grant. In every run
    # here (NATS 2.9.10) none arrived, while an agent that was never refused
    # is woken after the same reload (docs/scale-out.md, "refused SUBSCRIBEs").


def _wait_for_backoff(agent: AgentProcess, at_least: float, timeout: float = 60.0) -> None:
    """Wait until the agent schedules a reconnect ``at_least`` seconds away."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        lines = list(agent.lines)
        for line in lines[seen:]:
            delay = re.search(r"reconnect_scheduled delay=([\d.]+)", line)
            if delay and float(delay.group(1)) >= at_least:
                return
        seen = len(lines)
        time.sleep(0.02)
    raise AssertionError(f"no reconnect delay of {at_least} s:\n" + "\n".join(agent.lines))

