"""Wake-ups reach the real agent through the real broker: verified, acked, synced."""

from __future__ import annotations

import json
import socket
import time

import pytest

from epns import pki
from epns.envelope import Command, CommandType, key_id, sign_command, target_agent
from tests.support.clients import connect_server


def events(watcher, kind, timeout=10.0):
    """The next event of ``kind`` seen by the watcher."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = watcher.expect(timeout=max(0.1, deadline - time.monotonic()))
        if got.topic.endswith("/evt"):
            data = json.loads(got.payload)
            if data["type"] == kind:
                return data
    raise AssertionError(f"no {kind} event")


def online(watcher, agent_id, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = watcher.expect(timeout=max(0.1, deadline - time.monotonic()))
        if got.topic.endswith(f"/{agent_id}/presence") and b'"online"' in got.payload:
            return
    raise AssertionError(f"{agent_id} did not come online")


@pytest.fixture
def server(any_broker, pki_dir):
    client = connect_server(any_broker.port, pki_dir)
    assert client.subscribe("epns/v1/agents/+/evt") == [1]
    assert client.subscribe("epns/v1/agents/+/presence") == [1]
    return client


def test_wake_up_is_acked_and_answered_by_a_sync(any_broker, server, run_agent, agent_ids,
                                                  sign):
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [any_broker.port])
    online(server, agent_id)
    syncs.wait_for("connect")
    # The on-connect sync's report can still be on its way: take it first, so
    # that the sync event read below is the wake-up's.
    assert events(server, "sync")["body"]["reason"] == "connect"
    wake = sign(agent_id)
    wake_id = json.loads(wake)["id"]
    server.publish(f"epns/v1/agents/{agent_id}/cmd", wake)
    ack = events(server, "ack")
    assert (ack["ref"], ack["body"]["type"]) == (wake_id, "wake")
    syncs.wait_for("wake", wakes=wake_id)
    synced = events(server, "sync")
    assert synced["body"]["wakes"] == [wake_id]
    assert synced["body"]["ok"] is True
    agent.log_contains(rf"command_accepted id={wake_id} type=wake")
    code, report = agent.status()
    assert code == 0
    assert "last wake-up: " in report
    assert "synced" in report


def test_fan_out_wake_reaches_the_agent(any_broker, server, run_agent, agent_ids, sign):
    agent_id, = agent_ids(1)
    _agent, syncs = run_agent(agent_id, [any_broker.port])
    online(server, agent_id)
    wake = sign(agent_id, target="all")
    server.publish("epns/v1/all/cmd", wake)
    syncs.wait_for("wake", wakes=json.loads(wake)["id"])


def test_forged_expired_and_replayed_commands_are_ignored_with_reasons(
        any_broker, server, run_agent, agent_ids, sign, rogue_signing_key, pki_dir):
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [any_broker.port])
    online(server, agent_id)
    syncs.wait_for("connect")
    topic = f"epns/v1/agents/{agent_id}/cmd"
    now = time.time()
    forged = sign_command(Command(CommandType.WAKE, target_agent(agent_id), now, now + 60),
                          rogue_signing_key)
    server.publish(topic, forged)
    # It names its key (kid), which the agent does not know: refused by name.
    agent.log_contains(r"command_rejected .*kind=UnknownSigner .*signed by key")
    # A forger who names the agent's own key fails at the signature.
    wire = json.loads(forged)
    wire["kid"] = key_id(pki.load_public_key(pki_dir / pki.SIGNING_PUB))
    server.publish(topic, json.dumps(wire).encode())
    agent.log_contains(r"command_rejected .*kind=BadSignature")
    server.publish(topic, sign(agent_id, issued_at=now - 600, expires_at=now - 300))
    agent.log_contains(r"command_rejected .*kind=ExpiredMessage")
    good = sign(agent_id)
    server.publish(topic, good)
    syncs.wait_for("wake", wakes=json.loads(good)["id"])
    server.publish(topic, good)
    agent.log_contains(r"command_rejected .*kind=ReplayedMessage")
    server.publish(topic, sign("someone-else", target=target_agent("someone-else")))
    agent.log_contains(r"command_rejected .*kind=WrongTarget")
    server.publish(topic, b"\x00 not json")
    agent.log_contains(r"command_rejected .*kind=MalformedMessage")
    wakes = [entry for entry in syncs.entries() if entry[0] == "wake"]
    assert len(wakes) == 1, wakes
    assert agent.process.poll() is None


def test_wake_up_sent_while_offline_is_synced_after_the_reconnect(
        any_broker, server, run_agent, agent_ids, sign):
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [any_broker.port])
    online(server, agent_id)
    agent.stop()
    wake = sign(agent_id)
    server.publish(f"epns/v1/agents/{agent_id}/cmd", wake)
    _again, syncs = run_agent(agent_id, [any_broker.port])
    syncs.wait_for("wake", wakes=json.loads(wake)["id"], timeout=15)


@pytest.fixture(scope="session")
def rogue_signing_key(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rogue-signing")
    private, _public = pki.create_signing_key(directory)
    return pki.load_signing_key(private)


def test_wake_on_lan_is_relayed_to_a_loopback_listener_byte_by_byte(
        epns_broker, pki_dir, run_agent, agent_ids, sign):
    agent_id, = agent_ids(1)
    server = connect_server(epns_broker.port, pki_dir)
    assert server.subscribe(f"epns/v1/agents/{agent_id}/evt") == [1]
    assert server.subscribe(f"epns/v1/agents/{agent_id}/presence") == [1]
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    try:
        run_agent(agent_id, [epns_broker.port])
        online(server, agent_id)
        body = {"targets": [{"mac": "02-00-5E-10-00-01", "addresses": ["127.0.0.1"]},
                            {"mac": "not-a-mac", "addresses": ["127.0.0.1"]}],
                "ports": [port], "repeat": 2}
        command = sign(agent_id, CommandType.WOL, body=body)
        server.publish(f"epns/v1/agents/{agent_id}/cmd", command)
        expected = b"\xff" * 6 + bytes.fromhex("02005e100001") * 16
        packets = [listener.recv(2048) for _ in range(2)]
        assert packets == [expected, expected]
        result = events(server, "wol_result")
        assert result["ref"] == json.loads(command)["id"]
        good, bad = result["body"]["targets"]
        assert (good["mac"], good["packets"], good["sent"]) == (
            "02:00:5e:10:00:01", 2, [f"127.0.0.1:{port}"])
        assert bad["errors"]
        assert "MAC" in bad["errors"][0]
        assert result["body"]["ok"] is False
    finally:
        listener.close()
