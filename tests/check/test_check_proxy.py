"""epns-check through HTTP CONNECT proxies that get in the way: Debian's
tinyproxy (credentials, forbidden ports) and a TLS-inspecting proxy."""

from __future__ import annotations

import pytest

from tests.support.interception import INSPECTION_CA, InterceptingProxy
from tests.support.network import BlackHole, start_tinyproxy
from tests.support.processes import free_port


@pytest.fixture
def tinyproxy(tmp_path):
    started = []

    def start(**options):
        proxy = start_tinyproxy(tmp_path, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def test_through_a_working_proxy_is_exit_0(check, agent_toml, epns_broker, tinyproxy):
    proxy = tinyproxy()
    checked = check("--config", agent_toml([epns_broker.port], proxy={"url": proxy.url()}))
    assert checked.code == 0, checked.text()
    assert checked.verdict["route"] == f"proxy:{epns_broker.port}"
    row = checked.row("proxy", f"proxy:{epns_broker.port}")
    assert row["detail"] == (f"proxy 127.0.0.1:{proxy.port} opened a tunnel to "
                             f"127.0.0.1:{epns_broker.port} (200 Connection established)")
    assert "s3cret" not in checked.text()


def test_proxy_wants_auth_and_gets_wrong_credentials(check, agent_toml, epns_broker, tinyproxy):
    proxy = tinyproxy()
    config = agent_toml([epns_broker.port], proxy={"url": proxy.url(password="wrong")})
    checked = check("--config", config)
    # The agent falls back to direct, as the check says: push works, not on the primary.
    assert checked.code == 1, checked.text()
    assert checked.verdict["route"] == f"direct:{epns_broker.port}"
    row = checked.row("proxy", f"proxy:{epns_broker.port}")
    assert row["status"] == "FAIL"
    assert row["detail"].startswith(f"proxy 127.0.0.1:{proxy.port} refused the credentials (401")
    assert row["hint"].startswith("set the right proxy.username and proxy.password")


def test_proxy_without_credentials_is_told_to_set_them(check, agent_toml, epns_broker,
                                                       tinyproxy):
    proxy = tinyproxy()
    config = agent_toml([epns_broker.port], proxy={"url": f"http://127.0.0.1:{proxy.port}"})
    row = check("--config", config).row("proxy", f"proxy:{epns_broker.port}")
    assert "demands credentials (407 Proxy Authentication Required)" in row["detail"]
    assert row["hint"].startswith("set proxy.username and proxy.password")


def test_proxy_forbids_the_port(check, agent_toml, epns_broker, tinyproxy):
    """The proxy allows CONNECT only to the fallback port: 8883 is a 403."""
    proxy = tinyproxy(connect_ports=(epns_broker.fallback,))
    config = agent_toml([epns_broker.port, epns_broker.fallback], proxy={"url": proxy.url()})
    checked = check("--config", config)
    assert checked.code == 1, checked.text()
    forbidden = checked.row("proxy", f"proxy:{epns_broker.port}")
    assert forbidden["status"] == "FAIL"
    assert f"forbids CONNECT to 127.0.0.1:{epns_broker.port} (403" in forbidden["detail"]
    assert f"allow CONNECT to port {epns_broker.port} in the proxy's ACL" in forbidden["hint"]
    assert checked.row("proxy", f"proxy:{epns_broker.fallback}")["status"] == "PASS"
    assert checked.verdict["route"] == f"proxy:{epns_broker.fallback}"


def test_a_tunnel_that_opens_but_carries_nothing(check, agent_toml, epns_broker, tinyproxy):
    hole = BlackHole()
    proxy = tinyproxy()
    try:
        config = agent_toml([hole.port], proxy={"url": proxy.url()},
                            timeouts={"tls_handshake": 1.0})
        checked = check("--config", config, "--route", f"proxy:{hole.port}")
    finally:
        hole.close()
    assert checked.code == 2, checked.text()
    assert checked.row("proxy", f"proxy:{hole.port}")["status"] == "PASS"
    tls = checked.row("tls", f"proxy:{hole.port}")
    assert tls["status"] == "FAIL"
    assert "opened, but carries nothing" in tls["detail"]
    assert "passes only web traffic" in tls["hint"]


def test_unreachable_proxy_is_tried_once(check, agent_toml, epns_broker):
    dead = free_port()
    config = agent_toml([epns_broker.port, epns_broker.fallback],
                        proxy={"url": f"http://127.0.0.1:{dead}"})
    checked = check("--config", config)
    assert checked.code == 1, checked.text()
    row = checked.row("proxy", f"proxy 127.0.0.1:{dead}")
    assert row["status"] == "FAIL"
    assert "check proxy.url" in row["hint"]
    assert checked.row("proxy", f"proxy:{epns_broker.fallback}")["status"] == "SKIP"


def test_tls_interception_names_the_inspecting_ca(check, agent_toml, epns_broker, tmp_path):
    """A proxy that inspects TLS presents a certificate its own CA minted for the
    broker's name: the check names that CA and points at the content filter."""
    inspecting = InterceptingProxy(tmp_path / "inspection")
    try:
        config = agent_toml([epns_broker.port], proxy={"url": inspecting.url()})
        checked = check("--config", config)
    finally:
        inspecting.close()
    assert inspecting.tunnels, "the check never went through the proxy"
    assert checked.code == 1, checked.text()
    tls = checked.row("tls", f"proxy:{epns_broker.port}")
    assert tls["status"] == "FAIL"
    assert tls["detail"].startswith(f"TLS interception by '{INSPECTION_CA}'")
    assert tls["hint"].startswith(f"exempt 127.0.0.1:{epns_broker.port} from the firewall's "
                                  "HTTPS/TLS inspection (content filter)")
    assert checked.verdict["route"] == f"direct:{epns_broker.port}"
