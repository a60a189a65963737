"""The broker follows its TLS files without a restart (a CA rotation's needs):
a second CA added to ca.crt is trusted for new connections, a CA removed is
not, a new broker certificate is presented, and connected clients stay."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import pytest

from epns import pki
from tests.support.clients import Client, connect, tls_refused
from tests.support.processes import BrokerProcess, start_epns


def _replace(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def _context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


@pytest.fixture
def own_pki(tmp_path: Path) -> Path:
    """The session's PKI is shared: this test rewrites ca.crt, so it has its own."""
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    return certs


def test_ca_and_certificate_reload_keeps_clients(own_pki: Path, tmp_path: Path) -> None:
    old_ca = own_pki / pki.CA_CERT
    old_ca_pem = old_ca.read_bytes()
    new = pki.create_ca(tmp_path / "next", name="epns fleet CA 2")
    old_agent = pki.create_client_cert(pki.Pair(old_ca, own_pki / pki.CA_KEY),
                                       pki.agent_pair(own_pki, "a-old"), "a-old")
    new_agent = pki.create_client_cert(new, pki.agent_pair(tmp_path / "next", "a-new"),
                                       "a-new")
    broker = start_epns(own_pki, tls__reload_interval="0.2")
    clients: list[Client] = []
    try:
        # Connected before anything changes; stays connected throughout.
        kept = connect(broker.port, own_pki, "a-old", cert=(old_agent.cert, old_agent.key))
        clients.append(kept)
        kept.subscribe("epns/v1/agents/a-old/cmd")
        new_context = _context(old_ca, new_agent.cert, new_agent.key)
        assert tls_refused(broker.port, new_context, "a-new")

        # begin: both CAs.
        _replace(old_ca, old_ca_pem + new.cert.read_bytes())
        broker.log_contains(r"tls_reloaded ")
        clients.append(connect(broker.port, own_pki, "a-new",
                               context=_context(old_ca, new_agent.cert, new_agent.key)))
        # The one-port listener (443: MQTT, WebSocket and HTTPS) follows too.
        assert broker.fallback is not None
        clients.append(connect(broker.fallback, own_pki, "a-new",
                               context=_context(old_ca, new_agent.cert, new_agent.key)))

        # switch: the broker presents a certificate from the new CA.
        pki.create_broker_cert(new, tmp_path / "next", ("localhost", "127.0.0.1"))
        _replace(own_pki / pki.BROKER_KEY, (tmp_path / "next" / pki.BROKER_KEY).read_bytes())
        _replace(own_pki / pki.BROKER_CERT,
                 (tmp_path / "next" / pki.BROKER_CERT).read_bytes())
        wait_reloads(broker, 2)
        only_new = _context(new.cert, new_agent.cert, new_agent.key)
        clients.append(connect(broker.port, own_pki, "a-new", context=only_new))

        # finish: the old CA is dropped for new connections.
        _replace(old_ca, new.cert.read_bytes())
        wait_reloads(broker, 3)
        assert tls_refused(broker.port, _context(new.cert, old_agent.cert, old_agent.key),
                           "a-old")
        assert tls_refused(broker.fallback, _context(new.cert, old_agent.cert, old_agent.key),
                           "a-old")
        clients.append(connect(broker.port, own_pki, "a-new", context=only_new))

        # The connection made before the first change is still the same one.
        assert kept.paho.is_connected()
        assert kept.disconnects.empty()
        assert kept.connacks.empty()  # no reconnect either
        kept.publish("epns/v1/agents/a-old/evt", b"{}")
    finally:
        for client in clients:
            client.close()
        broker.stop()


def wait_reloads(broker: BrokerProcess, count: int) -> None:
    """Until the broker has logged ``count`` reloads."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sum(" tls_reloaded " in line for line in list(broker.lines)) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} reloads:\n" + "\n".join(broker.lines))
