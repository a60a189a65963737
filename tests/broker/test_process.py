"""The broker as an operator runs it: signals, config errors, metrics, WSS."""

from __future__ import annotations

import subprocess
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.clients import Client, agent_files, connect, tls_context
from tests.support.processes import ROOT, broker_env


def test_sigterm_stops_the_broker_cleanly(start_broker, pki_dir, agent_ids):
    broker = start_broker()
    agent_id, = agent_ids(1)
    client = connect(broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id))
    assert broker.stop() == 0
    broker.log_contains(r"\bbroker\.cli stopped\b")
    assert client.disconnects.get(timeout=5) != 0
    client.close()


def test_config_error_is_one_clear_line_and_a_non_zero_exit(pki_dir, tmp_path):
    config = tmp_path / "broker.toml"
    config.write_text("[limits]\nmax_conections = 5\n")
    result = subprocess.run([sys.executable, "-m", "broker", "--config", str(config)],
                            cwd=ROOT, env=broker_env(pki_dir), capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown key 'max_conections'" in lines[0]


def test_missing_certificate_is_a_clear_config_error(pki_dir, tmp_path):
    env = broker_env(pki_dir, tls__cert=str(tmp_path / "nope.crt"))
    result = subprocess.run([sys.executable, "-m", "broker"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "nope.crt does not exist" in result.stderr


def test_metrics_endpoint_reports_the_required_families(epns_broker, pki_dir, agent_ids):
    agent_id, = agent_ids(1)
    connect(epns_broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id)).close()
    text = epns_broker.metrics()
    for family in ("epns_broker_connections", "epns_broker_connects_total",
                   "epns_broker_connects_per_second", "epns_broker_refusals_total",
                   "epns_broker_messages_in_total", "epns_broker_messages_out_total",
                   "epns_broker_drops_total"):
        assert f"# TYPE {family} " in text
    assert epns_broker.metric("epns_broker_connects_total") >= 1


def test_mqtt_over_secure_websocket(start_broker, pki_dir, agent_ids):
    broker = start_broker(listeners__websocket__enabled="true",
                          listeners__websocket__host="127.0.0.1",
                          listeners__websocket__port="0")
    line = broker.log_contains(r"listening listener=websocket transport=wss")
    port = int(line.rsplit("port=", 1)[1])
    agent_id, = agent_ids(1)
    paho_client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=agent_id,
                              transport="websockets")
    paho_client.tls_set_context(tls_context(pki_dir, *agent_files(pki_dir, agent_id)))
    client = Client(paho_client)
    paho_client.connect("127.0.0.1", port)
    paho_client.loop_start()
    assert client.connacks.get(timeout=10) == 0
    assert client.subscribe(f"epns/v1/agents/{agent_id}/cmd") == [1]
    server = connect(broker.port, pki_dir, "epns-server",
                     cert=(pki_dir / "server.crt", pki_dir / "server.key"))
    server.publish(f"epns/v1/agents/{agent_id}/cmd", b"over wss")
    assert client.expect().payload == b"over wss"
    client.close()
    server.close()
