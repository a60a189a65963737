"""The real agent finds a route to the real broker from hostile networks."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.clients import connect_server
from tests.support.network import BlackHole, start_tinyproxy
from tests.support.processes import free_port


def presence(watcher, agent_id, state="online", timeout=10.0):
    """The next presence message of ``agent_id`` in ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = watcher.expect(timeout=max(0.1, deadline - time.monotonic()))
        if got.topic.endswith(f"/{agent_id}/presence") and got.payload:
            data = json.loads(got.payload)
            if data["state"] == state:
                return data
    raise AssertionError(f"no {state} presence for {agent_id}")


@pytest.fixture
def watcher(epns_broker, pki_dir):
    client = connect_server(epns_broker.port, pki_dir)
    assert client.subscribe("epns/v1/agents/+/presence") == [1]
    return client


def test_agent_connects_on_the_primary_port_announces_itself_and_syncs(
        epns_broker, watcher, run_agent, agent_ids):
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [epns_broker.port, epns_broker.fallback])
    birth = presence(watcher, agent_id)
    assert birth["route"] == f"direct:{epns_broker.port}"
    assert birth["version"]
    assert birth["hostname"]
    assert any(i["address"] == "127.0.0.1" for i in birth["interfaces"])
    syncs.wait_for("connect")
    agent.log_contains(rf"\bconnected route=direct:{epns_broker.port} keepalive=300")
    code, report = agent.status()
    assert code == 0
    assert f"push: connected via direct:{epns_broker.port}" in report
    assert "last sync: " in report


def test_refused_primary_port_falls_back_to_443(epns_broker, watcher, run_agent, agent_ids):
    agent_id, = agent_ids(1)
    closed = free_port()
    agent, syncs = run_agent(agent_id, [closed, epns_broker.fallback])
    agent.log_contains(rf"route_failed route=direct:{closed} step=tcp .*refused")
    assert presence(watcher, agent_id)["route"] == f"direct:{epns_broker.fallback}"
    agent.log_contains(rf"\bconnected route=direct:{epns_broker.fallback} keepalive=120")
    syncs.wait_for("connect")


def test_black_holed_primary_costs_only_the_handshake_timeout(epns_broker, watcher, run_agent,
                                                              agent_ids):
    """A middlebox that accepts TCP and never answers TLS."""
    agent_id, = agent_ids(1)
    hole = BlackHole()
    try:
        agent, _ = run_agent(agent_id, [hole.port, epns_broker.fallback],
                             timeouts={"tls_handshake": 2.0})
        trying = agent.log_contains(rf"route_trying route=direct:{hole.port}")
        connected = agent.log_contains(rf"\bconnected route=direct:{epns_broker.fallback}")
        agent.log_contains(r"step=tls .*no handshake within 2 s")
        elapsed = _seconds(connected) - _seconds(trying)
        assert elapsed <= 2.0 + 2.0, f"fallback took {elapsed:.1f} s"
    finally:
        hole.close()


def _seconds(line: str) -> float:
    stamp = line.partition(" ")[0]
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def test_through_an_http_connect_proxy_with_basic_auth(epns_broker, watcher, run_agent,
                                                       agent_ids, tmp_path):
    agent_id, = agent_ids(1)
    proxy = start_tinyproxy(tmp_path)
    try:
        agent, syncs = run_agent(agent_id, [epns_broker.port, epns_broker.fallback],
                                 proxy={"url": proxy.url()})
        birth = presence(watcher, agent_id)
        assert birth["route"] == f"proxy:{epns_broker.port}"
        agent.log_contains(rf"\bconnected route=proxy:{epns_broker.port} keepalive=60")
        syncs.wait_for("connect")
        assert "s3cret" not in "\n".join(agent.lines)
    finally:
        proxy.stop()


def test_proxy_from_https_proxy_variable(epns_broker, watcher, run_agent, agent_ids, tmp_path):
    agent_id, = agent_ids(1)
    proxy = start_tinyproxy(tmp_path)
    try:
        run_agent(agent_id, [epns_broker.port], env={"HTTPS_PROXY": proxy.url()},
                  proxy={"use_env": True})
        assert presence(watcher, agent_id)["route"] == f"proxy:{epns_broker.port}"
    finally:
        proxy.stop()


def test_wrong_proxy_password_is_logged_then_direct(epns_broker, watcher, run_agent, agent_ids,
                                                    tmp_path):
    agent_id, = agent_ids(1)
    proxy = start_tinyproxy(tmp_path)
    try:
        agent, _ = run_agent(agent_id, [epns_broker.port, epns_broker.fallback],
                             proxy={"url": proxy.url(password="wrong")})
        agent.log_contains(r"step=proxy .*proxy authentication failed \((401|407)\)")
        agent.log_contains(r"proxy_failed .*falling back to direct")
        assert presence(watcher, agent_id)["route"] == f"direct:{epns_broker.port}"
        # The dead proxy is tried once per attempt, not once per port.
        assert agent.count(r"route_failed route=proxy:") == 1
    finally:
        proxy.stop()


def test_proxy_killed_mid_session_reconnects_direct(epns_broker, watcher, run_agent, agent_ids,
                                                    tmp_path):
    agent_id, = agent_ids(1)
    proxy = start_tinyproxy(tmp_path)
    agent, syncs = run_agent(agent_id, [epns_broker.port],
                             proxy={"url": proxy.url()})
    assert presence(watcher, agent_id)["route"] == f"proxy:{epns_broker.port}"
    first = syncs.wait_for("connect")
    proxy.stop()
    agent.log_contains(r"disconnected route=proxy:")
    assert presence(watcher, agent_id, timeout=15)["route"] == f"direct:{epns_broker.port}"
    syncs.wait_for("connect", after=first + 1)


def test_broker_restart_gives_a_jittered_reconnect_and_an_immediate_sync(
        start_broker, pki_dir, run_agent, agent_ids):
    agent_id, = agent_ids(1)
    port, fallback = free_port(), free_port()
    ports = {"listeners__primary__port": str(port), "listeners__fallback__port": str(fallback)}
    broker = start_broker(**ports)
    agent, syncs = run_agent(agent_id, [port, fallback])
    first = syncs.wait_for("connect")
    broker.stop()
    agent.log_contains(r"disconnected route=direct:")
    agent.log_contains(r"reconnect_scheduled delay=")
    start_broker(**ports)
    agent.log_contains(r"\bconnected route=direct:", after=len(agent.lines) - 1, timeout=20)
    syncs.wait_for("connect", after=first + 1)
    delays = [float(line.split("delay=")[1].split()[0]) for line in agent.lines
              if "reconnect_scheduled" in line]
    assert delays, "no backoff before reconnecting"
    assert all(0.0 <= delay <= 3.0 for delay in delays)  # under the configured cap
    assert len(set(delays)) == len(delays), "jittered delays should differ"


def test_the_route_that_worked_last_is_tried_first_after_a_restart(epns_broker, watcher,
                                                                  run_agent, agent_ids):
    agent_id, = agent_ids(1)
    closed = free_port()
    agent, _ = run_agent(agent_id, [closed, epns_broker.fallback])
    presence(watcher, agent_id)
    agent.stop()
    again, _ = run_agent(agent_id, [closed, epns_broker.fallback])
    first_try = again.log_contains(r"route_trying")
    assert f"route=direct:{epns_broker.fallback}" in first_try


def test_secure_websocket_is_the_last_resort(start_broker, pki_dir, run_agent, agent_ids):
    """Where only HTTPS passes: both MQTT ports closed, the broker's WSS listener open."""
    broker = start_broker(listeners__websocket__enabled="true",
                          listeners__websocket__host="127.0.0.1",
                          listeners__websocket__port="0")
    line = broker.log_contains(r"listening listener=websocket transport=wss")
    ws_port = int(line.split(" port=")[1].split()[0])
    agent_id, = agent_ids(1)
    watcher = connect_server(broker.port, pki_dir)
    assert watcher.subscribe("epns/v1/agents/+/presence") == [1]
    closed = free_port()
    agent, syncs = run_agent(agent_id, [closed],
                             broker={"websocket_url": f"wss://127.0.0.1:{ws_port}/mqtt"})
    assert presence(watcher, agent_id)["route"] == "direct:wss"
    agent.log_contains(r"\bconnected route=direct:wss keepalive=60")
    syncs.wait_for("connect")


def test_token_identity_where_a_proxy_breaks_client_certificates(epns_broker, watcher, run_agent,
                                                                  agent_ids, token_for, tmp_path):
    agent_id, = agent_ids(1)
    token = tmp_path / f"{agent_id}.token"
    token.write_text(token_for(agent_id) + "\n")
    _agent, syncs = run_agent(agent_id, [epns_broker.port],
                              identity={"cert": None, "key": None,
                                        "token_file": str(token)})
    assert presence(watcher, agent_id)["route"] == f"direct:{epns_broker.port}"
    epns_broker.log_contains(rf"connected client={agent_id} .*auth=token")
    syncs.wait_for("connect")


def test_a_backup_host_is_tried_after_every_route_to_the_first(
        epns_broker, watcher, run_agent, agent_ids):
    """broker.host answers nothing (127.0.0.2: the broker listens on
    127.0.0.1 only); the agent goes on to broker.backup_hosts, names the
    route by its host, and syncs."""
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [epns_broker.port, epns_broker.fallback],
                             broker={"host": "127.0.0.2", "backup_hosts": ["127.0.0.1"]})
    agent.log_contains(rf"route_failed route=direct:{epns_broker.fallback} step=tcp .*refused")
    route = f"direct:{epns_broker.port}@127.0.0.1"
    assert presence(watcher, agent_id)["route"] == route
    agent.log_contains(rf"\bconnected route={route} ")
    syncs.wait_for("connect")
