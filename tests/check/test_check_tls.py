"""epns-check against real brokers with the wrong certificate: expired, for
another name, from an unknown CA, or about to expire."""

from __future__ import annotations

import datetime as dt

from epns import pki


def _broker_with(start_broker, pair):
    return start_broker(tls__cert=str(pair.cert), tls__key=str(pair.key))


def _fleet_ca(pki_dir):
    return pki.Pair(pki_dir / pki.CA_CERT, pki_dir / pki.CA_KEY)


def test_an_expired_broker_certificate(check, agent_toml, start_broker, pki_dir, tmp_path):
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    pair = pki.create_broker_cert(_fleet_ca(pki_dir), tmp_path, ("localhost", "127.0.0.1"),
                                  days=3, not_before=ten_days_ago)
    broker = _broker_with(start_broker, pair)
    checked = check("--config", agent_toml([broker.port]))
    assert checked.code == 2, checked.text()
    tls = checked.row("tls")
    assert tls["status"] == "FAIL"
    expired_on = (ten_days_ago + dt.timedelta(days=3)).strftime("%Y-%m-%d")
    assert tls["detail"] == f"the broker's certificate expired on {expired_on} (7 days ago)"
    assert tls["hint"].startswith("renew the broker's certificate")


def test_a_certificate_for_another_name(check, agent_toml, start_broker, pki_dir, tmp_path):
    pair = pki.create_broker_cert(_fleet_ca(pki_dir), tmp_path, ("push.example.net",))
    broker = _broker_with(start_broker, pair)
    checked = check("--config", agent_toml([broker.port]))
    assert checked.code == 2, checked.text()
    tls = checked.row("tls")
    assert tls["detail"] == "the broker's certificate is for push.example.net, not 127.0.0.1"
    assert tls["hint"] == ("set broker.host to a name the certificate carries (push.example.net),"
                           " or reissue the broker's certificate with 127.0.0.1")


def test_a_certificate_from_an_unknown_ca(check, agent_toml, start_broker, tmp_path):
    """The broker's PKI was re-created (same CA name, new key); the agent still
    has the old fleet CA."""
    other = tmp_path / "recreated"
    pki.init_dev_pki(other, ("localhost", "127.0.0.1"))
    broker = _broker_with(start_broker, pki.Pair(other / pki.BROKER_CERT,
                                                 other / pki.BROKER_KEY))
    checked = check("--config", agent_toml([broker.port]))
    assert checked.code == 2, checked.text()
    tls = checked.row("tls")
    assert tls["detail"].startswith("unknown CA: the broker's certificate is issued by a CA "
                                    "named 'epns fleet CA', but not by the one in ")
    assert "comes from another PKI" in tls["hint"]
    assert "interception" not in tls["detail"]


def test_a_certificate_about_to_expire_is_a_warning(check, agent_toml, start_broker, pki_dir,
                                                    tmp_path):
    pair = pki.create_broker_cert(_fleet_ca(pki_dir), tmp_path, ("localhost", "127.0.0.1"),
                                  days=10)
    broker = _broker_with(start_broker, pair)
    checked = check("--config", agent_toml([broker.port]))
    assert checked.code == 1, checked.text()
    tls = checked.row("tls")
    assert tls["status"] == "WARN"
    assert "expires in 9 days" in tls["detail"]
    assert tls["hint"].startswith("renew the broker's certificate before ")
    assert "with warnings" in checked.verdict["summary"]
