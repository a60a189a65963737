"""Authentication matrix against the real broker process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.clients import agent_files, connect, tls_context, tls_refused

ACCEPTED, BAD_CREDENTIALS, IDENTIFIER_REJECTED, NOT_AUTHORIZED = 0, 4, 2, 5


def test_agent_certificate_is_accepted(any_broker, pki_dir, agent_ids):
    (agent,) = agent_ids(1)
    client = connect(any_broker.port, pki_dir, agent, cert=agent_files(pki_dir, agent))
    client.close()


def test_fallback_listener_serves_the_same_contract(any_broker, pki_dir, agent_ids):
    (agent,) = agent_ids(1)
    client = connect(any_broker.fallback, pki_dir, agent, cert=agent_files(pki_dir, agent))
    client.close()


def test_no_certificate_and_no_token_is_refused_with_not_authorized(epns_broker, pki_dir):
    connect(epns_broker.port, pki_dir, "a001", expect_rc=NOT_AUTHORIZED).close()
    line = epns_broker.log_contains(r"refused client=a001 .*no client certificate and no token")
    assert "connack=5" in line


def test_mosquitto_contract_refuses_a_client_without_certificate(mosquitto_broker, pki_dir):
    assert tls_refused(mosquitto_broker.port, tls_context(pki_dir))


@pytest.mark.parametrize("broker_name", ["epns_broker", "mosquitto_broker"])
def test_certificate_from_unknown_ca_fails_the_handshake(request, broker_name, pki_dir,
                                                         rogue_pki_dir):
    broker = request.getfixturevalue(broker_name)
    context = tls_context(pki_dir, *agent_files(rogue_pki_dir, "a001"))
    assert tls_refused(broker.port, context)
    if broker.kind == "epns":
        broker.log_contains(r"tls_failed .*client certificate rejected")


def test_valid_token_is_accepted(epns_broker, pki_dir, token_for, agent_ids):
    (agent,) = agent_ids(1)
    client = connect(epns_broker.port, pki_dir, agent, token=token_for(agent))
    epns_broker.log_contains(rf"connected client={agent} .*auth=token")
    client.close()


def test_forged_token_is_refused_with_bad_credentials(epns_broker, pki_dir, token_for, agent_ids):
    (agent,) = agent_ids(1)
    good = token_for(agent)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    connect(epns_broker.port, pki_dir, agent, token=forged, expect_rc=BAD_CREDENTIALS).close()
    line = epns_broker.log_contains(rf"refused client={agent} .*signature does not verify")
    assert "connack=4" in line


def test_expired_token_is_refused(epns_broker, pki_dir, token_for, agent_ids):
    (agent,) = agent_ids(1)
    old = token_for(agent, ttl=60, now=time.time() - 86_400)
    connect(epns_broker.port, pki_dir, agent, token=old, expect_rc=BAD_CREDENTIALS).close()
    epns_broker.log_contains(rf"refused client={agent} .*token expired")


def test_token_for_another_agent_is_refused(epns_broker, pki_dir, token_for, agent_ids):
    victim, thief = agent_ids(2)
    connect(epns_broker.port, pki_dir, thief, token=token_for(victim), username=thief,
            expect_rc=BAD_CREDENTIALS).close()
    epns_broker.log_contains(rf"refused client={thief} .*token is for '{victim}'")


def test_client_id_must_match_the_certificate(epns_broker, pki_dir, agent_ids):
    mine, other = agent_ids(2)
    connect(epns_broker.port, pki_dir, other, cert=agent_files(pki_dir, mine),
            expect_rc=IDENTIFIER_REJECTED).close()
    line = epns_broker.log_contains(rf"refused client={other} .*does not match")
    assert "connack=2" in line


@pytest.mark.stock_amqtt_defect("the session is taken over before authentication")
def test_unauthenticated_client_cannot_take_over_a_session(hardened_broker, pki_dir, agent_ids):
    """Stock amqtt takes over (and, with clean session, deletes) the existing
    session before it checks credentials: the victim would be disconnected."""
    victim, = agent_ids(1)
    server = connect(hardened_broker.port, pki_dir, "epns-server",
                     cert=(pki_dir / "server.crt", pki_dir / "server.key"))
    client = connect(hardened_broker.port, pki_dir, victim, cert=agent_files(pki_dir, victim))
    assert client.subscribe(f"epns/v1/agents/{victim}/cmd") == [1]
    connect(hardened_broker.port, pki_dir, victim, expect_rc=NOT_AUTHORIZED).close()
    server.publish(f"epns/v1/agents/{victim}/cmd", b"still here")
    assert client.expect().payload == b"still here"
    assert client.disconnects.empty()
    client.close()
    server.close()


@pytest.mark.stock_amqtt_defect("the will topic is never checked against the ACL")
def test_will_topic_outside_the_acl_is_refused(hardened_broker, pki_dir, agent_ids):
    agent, victim = agent_ids(2)
    connect(hardened_broker.port, pki_dir, agent, cert=agent_files(pki_dir, agent),
            will=(f"epns/v1/agents/{victim}/presence", b"offline"),
            expect_rc=NOT_AUTHORIZED).close()
    if hardened_broker.kind == "epns":
        hardened_broker.log_contains(rf"refused client={agent} .*will topic")


def test_revocation_refuses_the_next_connect_and_closes_the_current(
        start_broker, pki_dir, agent_ids, tmp_path: Path):
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    broker = start_broker(identity__revocation_file=str(revoked))
    agent, = agent_ids(1)
    watcher = connect(broker.port, pki_dir, "epns-server",
                      cert=(pki_dir / "server.crt", pki_dir / "server.key"))
    assert watcher.subscribe("epns/v1/agents/+/presence") == [1]
    client = connect(broker.port, pki_dir, agent, cert=agent_files(pki_dir, agent),
                     will=(f"epns/v1/agents/{agent}/presence", b"offline"))
    revoked.write_text(f"agent:{agent}\n")
    assert client.disconnects.get(timeout=5) != 0
    got = watcher.expect()
    assert (got.topic, got.payload) == (f"epns/v1/agents/{agent}/presence", b"offline")
    broker.log_contains(rf"closing client={agent} reason=revoked")
    client.close()
    connect(broker.port, pki_dir, agent, cert=agent_files(pki_dir, agent),
            expect_rc=NOT_AUTHORIZED).close()
    broker.log_contains(rf"refused client={agent} .*is revoked \(agent:{agent}\)")
    watcher.close()
