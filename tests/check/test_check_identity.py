"""epns-check with identities the broker refuses: an expired token, a
certificate from another CA, a client id that is not the certificate's."""

from __future__ import annotations

import time

import pytest

from epns import pki


def test_an_expired_token_is_connack_4(check, agent_toml, epns_broker, token_for, agent_ids,
                                       tmp_path):
    agent_id, = agent_ids(1)
    token = tmp_path / "agent.token"
    token.write_text(token_for(agent_id, ttl=60, now=time.time() - 7200))
    config = agent_toml([epns_broker.port], agent_id,
                        identity={"cert": None, "key": None, "token_file": str(token)})
    checked = check("--config", config)
    assert checked.code == 2, checked.text()
    warned = checked.row("config", "identity.token_file")
    assert warned["status"] == "WARN"
    assert "token expired" in warned["detail"]
    mqtt = checked.row("mqtt")
    assert mqtt["status"] == "FAIL"
    assert mqtt["detail"] == "CONNACK 4: bad username or password: the token was refused"
    assert mqtt["hint"].startswith("the token is malformed, expired, or signed by another")


def test_a_certificate_from_another_ca_is_refused_by_the_broker(check, agent_toml, epns_broker,
                                                                rogue_pki_dir):
    """The broker's TLS alert about the client certificate is told apart from a
    bad server certificate: the broker's own certificate verified."""
    rogue = pki.agent_pair(rogue_pki_dir, "a001")
    config = agent_toml([epns_broker.port], "a001",
                        identity={"cert": str(rogue.cert), "key": str(rogue.key)})
    checked = check("--config", config)
    assert checked.code == 2, checked.text()
    assert any(row["status"] == "WARN" and "issued by 'rogue CA'" in row["detail"]
               for row in checked.rows("config"))
    assert checked.row("tls")["status"] == "PASS"
    mqtt = checked.row("mqtt")
    assert mqtt["status"] == "FAIL"
    # The epns broker closes without an alert; the check names the issuer it knows.
    assert mqtt["detail"] == ("the broker refused this agent's client certificate (it closed the "
                              "connection instead of a CONNACK; the certificate is issued by "
                              "'rogue CA', not by the fleet CA)")
    assert mqtt["hint"].startswith("the certificate is not from the CA the broker trusts")


def test_a_client_id_other_than_the_certificate_is_connack_2(check, agent_toml, epns_broker,
                                                             pki_dir, agent_ids):
    mine, other = agent_ids(2)
    theirs = pki.agent_pair(pki_dir, other)
    config = agent_toml([epns_broker.port], mine,
                        identity={"cert": str(theirs.cert), "key": str(theirs.key)})
    checked = check("--config", config)
    assert checked.code == 2, checked.text()
    assert checked.row("config", "identity.agent_id")["status"] == "WARN"
    mqtt = checked.row("mqtt")
    assert mqtt["detail"].startswith("CONNACK 2: identifier rejected")
    assert mqtt["hint"] == (f"identity.agent_id is {mine!r}, the certificate says {other!r}: "
                            "use the agent id the certificate or token was issued for")


@pytest.mark.mosquitto
def test_mosquitto_says_unknown_ca_about_a_certificate_from_another_ca(
        check, agent_toml, mosquitto_broker, rogue_pki_dir):
    rogue = pki.agent_pair(rogue_pki_dir, "a001")
    config = agent_toml([mosquitto_broker.port], "a001",
                        identity={"cert": str(rogue.cert), "key": str(rogue.key)})
    checked = check("--config", config)
    assert checked.code == 2, checked.text()
    mqtt = checked.row("mqtt")
    # Either the alert is read, or the CONNECT crossed Mosquitto's close and the
    # reset discarded it: then the issuer known from step 1 names the cause.
    assert mqtt["detail"] in (
        "the broker refused this agent's client certificate (tlsv1 alert unknown ca)",
        "the broker refused this agent's client certificate (it closed the connection instead "
        "of a CONNACK; the certificate is issued by 'rogue CA', not by the fleet CA)")
    assert mqtt["hint"].startswith("the certificate is not from the CA the broker trusts")
