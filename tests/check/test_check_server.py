"""epns-check with the management server: a test command end to end, the
sync endpoint, the clock; a revoked agent; an ACL that swallows commands;
and ``epns-check --server`` on the broker's host."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from epns import pki
from tests.check.conftest import build_stack
from tests.support.processes import ROOT, free_port
from tests.support.sync_server import Answer, SyncServer


def test_a_test_command_end_to_end_with_a_bundle(check, check_stack):
    """The agent.toml of a real bundle, as `epns-server agent create` writes it."""
    config = check_stack.bundle("e2e-cert")
    checked = check("--config", config, "--api-token", check_stack.token)
    assert checked.code == 0, checked.text()
    e2e = checked.row("e2e")
    assert e2e["status"] == "PASS"
    assert " ms after the API call; signature verified with " in e2e["detail"]
    assert e2e["seconds"] < 1.0
    sync = checked.row("sync")
    assert sync["detail"] == (f"GET {check_stack.server.url}/api/v1/agents/e2e-cert/sync "
                              "answered 200 to e2e-cert (certificate)")
    clock = checked.row("clock")
    assert clock["status"] == "PASS"
    assert "(/api/v1/health)" in clock["detail"]


def test_a_token_agent_end_to_end(check, check_stack, monkeypatch):
    config = check_stack.bundle("e2e-token", auth="token")
    monkeypatch.setenv("EPNS_API_TOKEN", check_stack.token)
    checked = check("--config", config)
    assert checked.code == 0, checked.text()
    assert checked.row("mqtt")["detail"] == "CONNACK 0: accepted as e2e-token (token)"
    assert checked.row("e2e")["status"] == "PASS"
    assert checked.row("sync")["detail"].endswith("answered 200 to e2e-token (token)")


def test_a_wrong_api_token(check, check_stack):
    config = check_stack.bundle("e2e-bad-api-token")
    checked = check("--config", config, "--api-token", "not-a-token")
    assert checked.code == 2, checked.text()
    e2e = checked.row("e2e")
    assert e2e["detail"].startswith("the server refused the test command (401 bad_token)")
    assert e2e["hint"].startswith("create an API token (epns-server token create NAME)")


def test_a_revoked_agent(check, check_stack):
    config = check_stack.bundle("revoked-1")
    with check_stack.server.client(check_stack.token) as api:
        answer = api.post("/api/v1/agents/revoked-1/revoke", json={"reason": "stolen laptop"})
    assert answer.status_code == 204, answer.text
    # The broker re-reads its revocation file twice a second.
    deadline = time.monotonic() + 10
    while True:
        checked = check("--config", config, "--api-token", check_stack.token)
        if checked.row("mqtt")["status"] == "FAIL" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert checked.code == 2, checked.text()
    mqtt = checked.row("mqtt")
    assert mqtt["detail"].startswith("CONNACK 5: not authorized")
    assert mqtt["hint"].startswith("check the revocation list")
    sync = checked.row("sync")
    assert sync["status"] == "FAIL"
    assert "(401 agent_revoked)" in sync["detail"]
    assert "is revoked" in sync["detail"]
    assert sync["hint"] == "the agent is revoked: enrol it again"


def test_clock_skew_against_the_server(check, agent_toml, epns_broker, pki_dir):
    """A stand-in server whose clock is five minutes ahead of this machine's."""
    with SyncServer(pki_dir) as server:
        ahead = time.time() + 300
        health = json.dumps({"status": "ok", "broker": True, "database": True,
                             "time": ahead}).encode()
        server.script(Answer(200, {"Content-Type": "application/json"}, b"{}"),
                      Answer(200, {"Content-Type": "application/json"}, health))
        checked = check("--config", agent_toml([epns_broker.port],
                                               sync={"url": server.url}))
    assert checked.code == 2, checked.text()
    assert checked.row("sync")["status"] == "PASS"
    clock = checked.row("clock")
    assert clock["status"] == "FAIL"
    assert re.fullmatch(r"this machine's clock is (299\.\d|300\.\d) s behind the server "
                        r"\(/api/v1/health\)", clock["detail"]), clock["detail"]
    assert clock["hint"].startswith("commands tolerate 60 s of clock difference: enable time "
                                    "sync (NTP")
    assert "clock fails" in checked.verdict["summary"]


@pytest.mark.mosquitto
def test_an_acl_that_swallows_the_agents_commands(check, tmp_path):
    """Mosquitto with an operator's ACL that forgot to let agents read their
    commands. Mosquitto grants such a SUBSCRIBE and then delivers nothing, so
    only the end-to-end step can see the denial: the server's command never
    arrives."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    shipped = (ROOT / "docker/mosquitto/acl").read_text()
    acl = shipped.replace("pattern read epns/v1/agents/%u/cmd\n", "")
    assert acl != shipped
    stack = build_stack(tmp_path, mosquitto_acl=acl)
    try:
        config = stack.bundle("acl-1")
        checked = check("--config", config, "--api-token", stack.token, "--push-timeout", "2")
    finally:
        stack.stop()
    assert checked.code == 2, checked.text()
    assert checked.row("mqtt")["status"] == "PASS"
    e2e = checked.row("e2e")
    assert e2e["status"] == "FAIL"
    assert "but it did not arrive within 2 s" in e2e["detail"]
    assert e2e["hint"].startswith("the broker's ACL denies the agent its command topic")
    assert "grant read on epns/v1/agents/%u/cmd" in e2e["hint"]


def _server_env(monkeypatch, stack, **extra):
    for name, value in {**stack.server.env, **stack.broker_env, **extra}.items():
        if name.startswith(("EPNS_SERVER_", "EPNS_BROKER_")):
            monkeypatch.setenv(name, value)
    # The check reads the broker's settings as the embedded broker would.
    monkeypatch.setenv("EPNS_SERVER_BROKER__ENABLED", "true")


def test_server_side_healthy(check, check_stack, monkeypatch):
    _server_env(monkeypatch, check_stack)
    checked = check("--server")
    assert checked.code == 0, checked.text()
    assert {row["subject"] for row in checked.rows("listener")} == {"primary", "fallback"}
    assert all(row["status"] == "PASS" for row in checked.rows("listener"))
    assert {row["status"] for row in checked.rows("certificate")} == {"PASS"}
    assert "connections open" in checked.row("metrics")["detail"]
    health = checked.row("health")
    assert health["detail"].endswith("status ok, broker link up, database answers")


def test_server_side_with_a_broker_down_and_a_certificate_about_to_expire(
        check, check_stack, monkeypatch, tmp_path):
    ca = pki.Pair(check_stack.pki / pki.CA_CERT, check_stack.pki / pki.CA_KEY)
    soon = pki.create_broker_cert(ca, tmp_path, ("localhost",), days=12)
    down, metrics = free_port(), free_port()
    _server_env(monkeypatch, check_stack, EPNS_BROKER_LISTENERS__PRIMARY__PORT=str(down),
                EPNS_BROKER_METRICS__PORT=str(metrics),
                EPNS_BROKER_TLS__CERT=str(soon.cert), EPNS_BROKER_TLS__KEY=str(soon.key))
    checked = check("--server")
    assert checked.code == 2, checked.text()
    primary = checked.row("listener", "primary")
    assert primary["detail"] == f"nothing listens on 127.0.0.1:{down} (primary listener)"
    assert primary["hint"].startswith("start the broker")
    assert checked.row("listener", "fallback")["status"] == "PASS"
    expiring = checked.row("certificate", str(soon.cert))
    assert expiring["status"] == "WARN"
    assert "(11 days)" in expiring["detail"]
    assert expiring["hint"].startswith("renew it")
    assert checked.row("metrics")["status"] == "FAIL"


def test_server_side_with_a_config_that_cannot_be_loaded(check, tmp_path):
    broken = tmp_path / "server.toml"
    broken.write_text("[http]\nport = 'nine'\n")
    checked = check("--server", "--config", broken)
    assert checked.code == 3, checked.text()
    row = checked.row("config")
    assert row["status"] == "FAIL"
    assert "port" in row["detail"]
