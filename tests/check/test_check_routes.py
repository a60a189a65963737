"""epns-check against the real broker behind deliberately broken networks:
closed, black-holed and silent ports, and the route the agent will use."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from epns_check.cli import main
from tests.support.agents import start_agent
from tests.support.network import BlackHole, SilentPort
from tests.support.processes import ROOT, free_port


def test_a_healthy_primary_route_is_exit_0(check, agent_toml, epns_broker):
    checked = check("--config", agent_toml([epns_broker.port, epns_broker.fallback]))
    assert checked.code == 0, checked.text()
    assert checked.verdict["route"] == f"direct:{epns_broker.port}"
    assert "push works on the primary route" in checked.verdict["summary"]
    assert [row["number"] for row in checked.report["steps"]] == sorted(
        row["number"] for row in checked.report["steps"])
    assert checked.row("tls", f"direct:{epns_broker.port}")["detail"].startswith("TLSv1.")
    assert checked.row("mqtt")["detail"].startswith("CONNACK 0")
    assert {row["status"] for row in checked.rows("acl")} == {"PASS"}
    # Without a server URL and API token the server steps say how to run them.
    assert "--api-token" in checked.row("e2e")["detail"]
    assert "disconnected, and reconnects by itself" in checked.report["notes"][0]
    assert checked.report["epns_version"]
    assert checked.report["checked_at"].endswith("+00:00")


def test_8883_refused_and_no_fallback_is_exit_2(check, agent_toml):
    closed = free_port()
    checked = check("--config", agent_toml([closed]))
    assert checked.code == 2, checked.text()
    tcp = checked.row("tcp", f"direct:{closed}")
    assert tcp["status"] == "FAIL"
    assert tcp["detail"] == f"TCP 127.0.0.1:{closed} refused"
    assert "nothing listens on port" in tcp["hint"]
    assert "no route reaches the broker" in checked.verdict["summary"]
    assert checked.row("e2e")["status"] == "SKIP"


def test_only_443_open_works_on_the_fallback_with_exit_1(check, agent_toml, epns_broker):
    closed = free_port()
    checked = check("--config", agent_toml([closed, epns_broker.fallback]))
    assert checked.code == 1, checked.text()
    assert checked.verdict["route"] == f"direct:{epns_broker.fallback}"
    assert "only on a fallback route" in checked.verdict["summary"]
    assert checked.row("tcp", f"direct:{closed}")["status"] == "FAIL"
    assert checked.row("tls", f"direct:{epns_broker.fallback}")["status"] == "PASS"


def test_8883_black_holed_at_tcp_is_a_timeout(check, agent_toml, epns_broker):
    """SYNs to the port are dropped (a full accept queue): the connect times out."""
    silent = SilentPort()
    try:
        checked = check("--config", agent_toml([silent.port, epns_broker.fallback],
                                               timeouts={"tcp_connect": 1.0}))
    finally:
        silent.close()
    assert checked.code == 1, checked.text()
    tcp = checked.row("tcp", f"direct:{silent.port}")
    assert tcp["status"] == "FAIL"
    assert "timed out after 1 s" in tcp["detail"]
    assert "a firewall drops TCP" in tcp["hint"]
    assert 0.9 <= tcp["seconds"] < 3
    assert checked.verdict["route"] == f"direct:{epns_broker.fallback}"


def test_8883_that_accepts_tcp_and_never_answers_tls(check, agent_toml, epns_broker):
    """A middlebox that completes the TCP handshake, then black-holes the flow."""
    hole = BlackHole()
    try:
        checked = check("--config", agent_toml([hole.port, epns_broker.fallback],
                                               timeouts={"tls_handshake": 1.0}))
    finally:
        hole.close()
    assert checked.code == 1, checked.text()
    assert checked.row("tcp", f"direct:{hole.port}")["status"] == "PASS"
    tls = checked.row("tls", f"direct:{hole.port}")
    assert tls["status"] == "FAIL"
    assert "no TLS answer within 1 s" in tls["detail"]
    assert "black-holes the traffic after the connect" in tls["hint"]


def test_route_tests_one_route(check, agent_toml, epns_broker):
    closed = free_port()
    config = agent_toml([closed, epns_broker.fallback])
    checked = check("--config", config, "--route", f"direct:{epns_broker.fallback}")
    assert checked.code == 0, checked.text()
    assert checked.rows("tcp") == [checked.row("tcp", f"direct:{epns_broker.fallback}")]


def test_the_route_that_worked_last_is_tested_first(check, agent_toml, epns_broker):
    config = agent_toml([epns_broker.port, epns_broker.fallback])
    state = config.parent / f"state-{config.stem}"
    state.mkdir()
    (state / "route").write_text(f"direct:{epns_broker.fallback}\n")
    checked = check("--config", config)
    assert checked.code == 0, checked.text()
    assert checked.verdict["route"] == f"direct:{epns_broker.fallback}"
    assert checked.row("mqtt")["route"] == f"direct:{epns_broker.fallback}"


def test_an_unknown_route_is_a_usage_error(agent_toml, epns_broker, capsys):
    config = agent_toml([epns_broker.port])
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "--route", "proxy:8883"])
    assert exited.value.code == 3
    assert f"this agent's routes are direct:{epns_broker.port}" in capsys.readouterr().err


def test_a_missing_certificate_is_a_config_error_and_the_network_is_still_checked(
        check, agent_toml, epns_broker, tmp_path):
    config = agent_toml([epns_broker.port], identity={"cert": str(tmp_path / "nope.crt")})
    checked = check("--config", config)
    assert checked.code == 3, checked.text()
    row = checked.row("config", "identity.cert")
    assert row["status"] == "FAIL"
    assert "nope.crt does not exist" in row["detail"]
    assert "agent.crt and agent.key" in row["hint"]
    assert checked.row("tcp")["status"] == "PASS"
    assert checked.row("tls")["status"] == "SKIP"


def test_flags_alone_and_plain_output_when_piped(pki_dir, epns_broker, agent_ids):
    """The console script as a support person runs it: no agent.toml, output piped."""
    agent_id, = agent_ids(1)
    pair = f"{pki_dir}/agents/{agent_id}"
    done = subprocess.run(
        [sys.executable, "-m", "epns_check", "--agent-id", agent_id, "--host", "127.0.0.1",
         "--port", str(epns_broker.port), "--ca", f"{pki_dir}/ca.crt", "--cert",
         f"{pair}.crt", "--key", f"{pair}.key", "--server-key", f"{pki_dir}/signing.pub",
         "--proxy", "", "--timeout", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[PASS]  6 mqtt        direct:{epns_broker.port}" in done.stdout
    assert f"verdict: push works on the primary route direct:{epns_broker.port} (exit 0)" \
        in done.stdout
    assert "\x1b[" not in done.stdout


def test_where_only_https_passes_mqtt_over_websocket_works(check, agent_toml, start_broker):
    broker = start_broker(listeners__websocket__enabled="true",
                          listeners__websocket__host="127.0.0.1",
                          listeners__websocket__port="0")
    line = broker.log_contains(r"listening listener=websocket transport=wss")
    ws_port = int(line.split(" port=")[1].split()[0])
    closed = free_port()
    config = agent_toml([closed], broker={"websocket_url": f"wss://127.0.0.1:{ws_port}/mqtt"})
    checked = check("--config", config)
    assert checked.code == 1, checked.text()
    assert checked.verdict["route"] == "direct:wss"
    upgrade = checked.row("tls", "direct:wss upgrade")
    assert upgrade["detail"] == (f"WebSocket upgrade on wss://127.0.0.1:{ws_port}/mqtt "
                                 "accepted (subprotocol mqtt)")
    assert checked.row("mqtt")["route"] == "direct:wss"
    assert {row["status"] for row in checked.rows("acl")} == {"PASS"}


def test_a_websocket_url_that_names_the_mqtt_port(check, agent_toml, epns_broker):
    url = f"wss://127.0.0.1:{epns_broker.port}/mqtt"
    config = agent_toml([epns_broker.port], broker={"websocket_url": url})
    checked = check("--config", config, "--route", "direct:wss")
    assert checked.code == 2, checked.text()
    upgrade = checked.row("tls", "direct:wss upgrade")
    assert upgrade["status"] == "FAIL"
    assert upgrade["hint"] == ("the port in broker.websocket_url is not the broker's WebSocket "
                               "listener")


def test_a_broker_name_and_every_address_it_resolves_to(check, agent_toml, epns_broker):
    config = agent_toml([epns_broker.port], broker={"host": "localhost"})
    checked = check("--config", config)
    assert checked.code == 0, checked.text()
    dns = checked.row("dns", "localhost")
    assert dns["detail"].startswith("localhost resolves to ")
    assert "127.0.0.1" in dns["detail"]
    assert "localhost matches" in checked.row("tls")["detail"]


def test_a_proxy_url_that_cannot_be_used_is_a_config_error(check, agent_toml, epns_broker):
    checked = check("--config", agent_toml([epns_broker.port]), "--proxy", "http://:3128")
    assert checked.code == 3, checked.text()
    assert "is not http://host:port" in checked.row("config")["detail"]


def test_no_takeover_leaves_a_running_agent_its_session(check, agent_toml, epns_broker):
    # The agent syncs by a command here: this test is about its MQTT session.
    config = agent_toml([epns_broker.port, epns_broker.fallback],
                        sync={"action": "command", "command": ["true"]})
    agent = start_agent(config)
    try:
        agent.log_contains(rf"connected route=direct:{epns_broker.port} ")
        checked = check("--config", config, "--no-takeover")
        assert checked.code == 0, checked.text()
        assert checked.verdict["summary"] == (
            f"the broker is reachable on the primary route direct:{epns_broker.port} "
            "(TLS verified; MQTT not tried: --no-takeover)")
        assert checked.row("mqtt")["status"] == "SKIP"
        assert "--no-takeover" in checked.report["notes"][0]
        time.sleep(1.0)
        assert agent.count(r"disconnected") == 0
        # Without the option the check takes the session over, as its note says.
        check("--config", config)
        agent.log_contains(r"disconnected ", timeout=10)
    finally:
        agent.stop()
