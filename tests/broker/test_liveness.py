"""Keep-alive enforcement, the will, and the CONNECT timeout."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.clients import RawClient, connect, connect_packet


@pytest.mark.stock_amqtt_defect("keep-alive is never enforced")
def test_silent_client_is_dropped_within_one_and_a_half_keepalives_and_its_will_fires(
        any_broker, pki_dir, agent_ids):
    """Stock amqtt never drops a silent client, so its will never fires."""
    agent_id, = agent_ids(1)
    watcher = connect(any_broker.port, pki_dir, "epns-server",
                      cert=(pki_dir / "server.crt", pki_dir / "server.key"))
    assert watcher.subscribe("epns/v1/agents/+/presence") == [1]
    raw = RawClient(any_broker.port, pki_dir, agent_id)
    will = (f"epns/v1/agents/{agent_id}/presence", b"offline")
    raw.send(connect_packet(agent_id, keepalive=2, will=will))
    assert raw.read_packet()[0] == 2  # CONNACK
    # Mosquitto checks keep-alives on a coarser tick; the bound is ours.
    # Mosquitto's coarse keep-alive tick takes about 6 s here, more on a busy machine.
    closed_after = raw.closed_within(12)
    assert closed_after is not None, "a client silent for 12 s with keep-alive 2 is still connected"
    if any_broker.kind == "epns":
        assert closed_after <= 2 * 1.5 + 1.0
    # The broker is shared: other agents' retained presence may come first.
    got = watcher.expect(timeout=3)
    while got.topic != will[0]:
        got = watcher.expect(timeout=3)
    assert (got.topic, got.payload) == will
    if any_broker.kind == "epns":
        any_broker.log_contains(rf"keepalive_expired client={agent_id} .*limit=3.0")
    raw.close()
    watcher.close()


def test_pings_keep_a_client_connected(epns_broker, pki_dir, agent_ids):
    agent_id, = agent_ids(1)
    raw = RawClient(epns_broker.port, pki_dir, agent_id)
    raw.send(connect_packet(agent_id, keepalive=1))
    assert raw.read_packet()[0] == 2
    for _ in range(5):
        time.sleep(0.6)
        raw.send(bytes([0xC0, 0]))  # PINGREQ
        assert raw.read_packet()[0] == 13  # PINGRESP
    raw.close()


@pytest.mark.stock_amqtt_defect("no timeout for the first CONNECT")
def test_socket_that_never_sends_connect_is_closed(start_broker, pki_dir):
    """Stock amqtt waits for the first CONNECT forever."""
    broker = start_broker(limits__connect_timeout="1.5")
    raw = RawClient(broker.port, pki_dir, "a001")  # TLS done, then silence
    closed_after = raw.closed_within(5)
    assert closed_after is not None
    assert 1.0 <= closed_after <= 3.0
    if broker.kind == "epns":
        broker.log_contains(r"connect_timeout .*timeout=1.5")
    raw.close()


@pytest.mark.stock_amqtt_defect("no timeout for the TLS handshake")
def test_tcp_connection_that_never_starts_tls_is_closed(start_broker):
    broker = start_broker(limits__tls_handshake_timeout="1.0")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        start = time.monotonic()
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        assert closed
        assert time.monotonic() - start <= 3.0
    if broker.kind == "epns":
        broker.log_contains(r"tls_failed .*")
