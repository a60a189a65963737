"""One port for everything: the broker's fallback listener (443 in production)
carries MQTT and the server's HTTPS, told apart by ALPN or the first byte.

Real broker, real server (its front socket), real agents, real TLS clients."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from epns import pki, topics
from epns.front import Handover
from tests.server.conftest import Stack
from tests.support import clients
from tests.support.processes import start_epns

HEALTH = "/api/v1/health"


def _context(stack: Stack, *, alpn: list[str] | None, agent: str | None = None
             ) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    if agent is not None:
        pair = pki.agent_pair(stack.pki, agent)
        context.load_cert_chain(pair.cert, pair.key)
    return context


def _raw_http(stack: Stack, request: bytes, *, alpn: list[str] | None,
              agent: str | None = None) -> tuple[int, bytes]:
    """Send ``request`` over TLS to the one port; the status and body."""
    assert stack.broker.fallback is not None
    context = _context(stack, alpn=alpn, agent=agent)
    with socket.create_connection(("127.0.0.1", stack.broker.fallback), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_https_on_the_one_port_answers_like_the_https_port(stack: Stack) -> None:
    """A browser or HTTP client (ALPN http/1.1) gets the server's API there."""
    assert stack.broker.fallback is not None
    context = _context(stack, alpn=None)
    with httpx.Client(verify=context, timeout=10) as client:
        one_port = client.get(f"https://127.0.0.1:{stack.broker.fallback}{HEALTH}")
        own_port = client.get(f"{stack.server.url}{HEALTH}")
    assert one_port.status_code == own_port.status_code == 200
    assert one_port.json()["status"] == own_port.json()["status"]
    assert one_port.http_version == "HTTP/1.1"


def test_http_without_alpn_is_told_apart_by_its_first_byte(stack: Stack) -> None:
    status, body = _raw_http(
        stack, b"GET " + HEALTH.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        alpn=None)
    assert status == 200, body
    assert json.loads(body)["status"]


def test_an_agent_pushes_and_syncs_through_the_one_port_alone(stack: Stack) -> None:
    """Only the one port: the agent's MQTT (ALPN mqtt) and its sync (HTTPS,
    with its client certificate handed over to the server) both go there,
    and a wake-up is satisfied."""
    assert stack.broker.fallback is not None
    one_port = f"https://127.0.0.1:{stack.broker.fallback}"
    agent = stack.start_agent("one-port-1", ports=[stack.broker.fallback],
                              sync={"url": one_port})
    agent.log_contains(rf"\bconnected route=direct:{stack.broker.fallback}\b", timeout=15)
    agent.log_contains(r"sync_done .*status=200", timeout=15)
    wakeup = stack.wake("one-port-1")
    done = stack.wait_wakeup(wakeup, "satisfied", timeout=10)
    assert done["counts"]["satisfied"] == 1
    seen = stack.wait_agent("one-port-1", "online")
    assert seen["route"] == f"direct:{stack.broker.fallback}"


def test_mqtt_without_alpn_is_told_apart_by_its_first_byte(stack: Stack) -> None:
    """A client that offers no ALPN (paho as most tools use it, Mosquitto's
    clients): its CONNECT (0x10) makes it MQTT, and it pubs and subs there."""
    assert stack.broker.fallback is not None
    bundle = stack.create_agent("probe-1")
    agent = clients.connect(stack.broker.fallback, stack.pki, "probe-1",
                            cert=(bundle / "agent.crt", bundle / "agent.key"))
    try:
        assert agent.subscribe(topics.agent_cmd("probe-1")) == [1]
        assert stack.broker.metric('epns_broker_connections{listener="fallback"}') == 1
    finally:
        agent.close()


def test_a_certificate_cannot_be_smuggled_in_a_header_through_the_front(stack: Stack) -> None:
    """The front hands over the TLS it ended; a header that names another
    agent's certificate is not believed behind it."""
    pem = (stack.create_agent("victim-1") / "agent.crt").read_text()
    quoted = httpx.URL("", params={"c": pem}).query.decode()[2:]
    request = (f"POST /api/v1/agents/victim-1/sync HTTP/1.1\r\nHost: x\r\n"
               f"X-Client-Cert: {quoted}\r\nContent-Type: application/json\r\n"
               f"Content-Length: 2\r\nConnection: close\r\n\r\n{{}}").encode()
    status, body = _raw_http(stack, request, alpn=["http/1.1"])
    assert status == 401, body


def test_a_forged_handover_line_from_a_client_is_a_bad_request(stack: Stack) -> None:
    """A client that writes the front's handover line itself only writes a
    request line the server refuses: the front's own line came first."""
    bundle = stack.create_agent("victim-2")
    der = ssl.PEM_cert_to_DER_cert((bundle / "agent.crt").read_text())
    forged = Handover("127.0.0.1", 1, der).encode()
    request = forged + (b"POST /api/v1/agents/victim-2/sync HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    status, _ = _raw_http(stack, request, alpn=["http/1.1"])
    assert status == 400
    assert base64.b64encode(der)  # the line really carried a certificate


def test_without_the_server_the_one_port_says_why(pki_dir: Path, tmp_path: Path) -> None:
    """MQTT on the one port works without the server; HTTPS gets a 502 that
    names the front socket, and the broker logs what to do."""
    missing = tmp_path / "front.sock"
    broker = start_epns(pki_dir, listeners__fallback__http_upstream=str(missing))
    try:
        assert broker.fallback is not None
        context = ssl.create_default_context(cafile=str(pki_dir / pki.CA_CERT))
        with httpx.Client(verify=context, timeout=10) as client:
            answer = client.get(f"https://127.0.0.1:{broker.fallback}{HEALTH}")
        assert answer.status_code == 502
        assert str(missing) in answer.text
        broker.log_contains(r"front_upstream_unavailable .*hint=")
        assert broker.metric("epns_broker_http_relays") == 0
    finally:
        broker.stop()


@pytest.mark.parametrize("opening", [b"", b"\x10"])
def test_a_client_that_stays_silent_is_closed_after_the_connect_timeout(
        pki_dir: Path, tmp_path: Path, opening: bytes) -> None:
    broker = start_epns(pki_dir, limits__connect_timeout="1",
                        listeners__fallback__http_upstream=str(tmp_path / "none.sock"))
    try:
        assert broker.fallback is not None
        context = ssl.create_default_context(cafile=str(pki_dir / pki.CA_CERT))
        with socket.create_connection(("127.0.0.1", broker.fallback), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(opening)
            tls.settimeout(6)
            assert tls.recv(1) == b""  # closed by the broker, not by our timeout
    finally:
        broker.stop()


def test_mqtt_over_websocket_on_the_one_port_keeps_the_certificate(stack: Stack) -> None:
    """An upgrade to /mqtt on the one port is MQTT over WebSocket; the
    agent's certificate, which the broker's front saw, identifies it."""
    assert stack.broker.fallback is not None
    bundle = stack.create_agent("ws-1")
    paho_client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ws-1",
                              transport="websockets")
    paho_client.ws_set_options(path="/mqtt")
    paho_client.tls_set_context(clients.tls_context(stack.pki, bundle / "agent.crt",
                                                    bundle / "agent.key"))
    client = clients.Client(paho_client)
    paho_client.connect("127.0.0.1", stack.broker.fallback, keepalive=30)
    paho_client.loop_start()
    try:
        assert client.connacks.get(timeout=10) == 0
        assert client.subscribe(topics.agent_cmd("ws-1")) == [1]
        # Another agent's topic: the ACL knows it is ws-1.
        assert client.subscribe(topics.agent_cmd("other-1")) == [0x80]
        assert stack.broker.metric('epns_broker_connections{listener="fallback"}') == 1
    finally:
        client.close()


def test_mqtt_over_websocket_without_a_certificate_is_refused(stack: Stack) -> None:
    assert stack.broker.fallback is not None
    paho_client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ws-2",
                              transport="websockets")
    paho_client.ws_set_options(path="/mqtt")
    paho_client.tls_set_context(clients.tls_context(stack.pki))
    client = clients.Client(paho_client)
    paho_client.connect("127.0.0.1", stack.broker.fallback, keepalive=30)
    paho_client.loop_start()
    try:
        assert client.connacks.get(timeout=10) == 5  # not authorized
    finally:
        client.close()
    stack.broker.log_contains(r"refused client=ws-2 .*listener=fallback")
