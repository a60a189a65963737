"""Connection limit, admission rate, packet size, in-flight window, offline queue."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.support.clients import (
    RawClient,
    agent_files,
    connect,
    connect_packet,
    connect_server,
    puback_packet,
    subscribe_packet,
    tls_context,
)


@pytest.mark.stock_amqtt_defect("max_connections is a semaphore: the extra client hangs")
def test_over_the_connection_limit_a_client_is_refused_not_left_hanging(start_broker, pki_dir,
                                                                         agent_ids):
    """Stock amqtt's max_connections is a semaphore: the extra client hangs."""
    broker = start_broker(limits__max_connections="2")
    ids = agent_ids(3)
    held = [connect(broker.port, pki_dir, i, cert=agent_files(pki_dir, i)) for i in ids[:2]]
    start = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    context = tls_context(pki_dir, *agent_files(pki_dir, ids[2]))
    try:
        context.wrap_socket(raw, server_hostname="localhost").close()
        refused = False
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    finally:
        raw.close()
    assert refused
    assert time.monotonic() - start < 2.0
    if broker.kind == "epns":
        broker.log_contains(r"admission_refused reason=connection_limit")
        assert broker.metric('epns_broker_refusals_total{reason="connection_limit"}') >= 1
    held[0].close()
    time.sleep(0.3)
    connect(broker.port, pki_dir, ids[0], cert=agent_files(pki_dir, ids[0])).close()
    held[1].close()


@pytest.mark.stock_amqtt_defect("no admission control before the TLS handshake")
def test_admission_rate_refuses_the_excess_before_the_tls_handshake(start_broker, pki_dir):
    broker = start_broker(limits__connect_rate="1", limits__connect_burst="2")
    context = tls_context(pki_dir, *agent_files(pki_dir, "a001"))
    handshakes = 0
    for _ in range(6):
        raw = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        try:
            with context.wrap_socket(raw, server_hostname="localhost"):
                handshakes += 1
        except (ssl.SSLError, ConnectionError):
            pass  # closed at the door: no TLS byte ever came back
        finally:
            raw.close()
    assert handshakes == 2
    if broker.kind == "epns":
        assert broker.metric('epns_broker_refusals_total{reason="admission_rate"}') == 4
        broker.log_contains(r"admission_refused reason=admission_rate")


@pytest.mark.stock_amqtt_defect("no maximum packet size")
def test_oversized_packet_closes_that_client_only(start_broker, pki_dir, agent_ids):
    broker = start_broker(limits__max_packet_size="1024")
    sender, bystander = agent_ids(2)
    srv = connect_server(broker.port, pki_dir)
    other = connect(broker.port, pki_dir, bystander, cert=agent_files(pki_dir, bystander))
    assert other.subscribe(f"epns/v1/agents/{bystander}/cmd") == [1]
    big = connect(broker.port, pki_dir, sender, cert=agent_files(pki_dir, sender))
    big.paho.publish(f"epns/v1/agents/{sender}/evt", b"x" * 4096, qos=0)
    assert big.disconnects.get(timeout=5) != 0
    if broker.kind == "epns":
        broker.log_contains(r"protocol_violation .*exceeds the maximum packet size 1024")
    srv.publish(f"epns/v1/agents/{bystander}/cmd", b"still served")
    assert other.expect().payload == b"still served"
    for client in (big, other, srv):
        client.close()


@pytest.mark.stock_amqtt_defect("no in-flight window")
def test_in_flight_window_holds_back_unacked_messages(start_broker, pki_dir, agent_ids):
    broker = start_broker(limits__max_inflight="2")
    agent_id, = agent_ids(1)
    srv = connect_server(broker.port, pki_dir)
    raw = RawClient(broker.port, pki_dir, agent_id)
    raw.send(connect_packet(agent_id))
    assert raw.read_packet()[0] == 2
    raw.send(subscribe_packet(1, f"epns/v1/agents/{agent_id}/cmd"))
    assert raw.read_packet()[0] == 9
    for number in range(5):
        srv.publish(f"epns/v1/agents/{agent_id}/cmd", f"cmd {number}".encode())
    first = [raw.read_packet() for _ in range(2)]
    assert [packet[0] for packet in first] == [3, 3]
    try:
        extra = raw.read_packet(timeout=0.8)
    except TimeoutError:
        extra = None
    assert extra is None, "a third PUBLISH arrived with two unacknowledged"
    received = []
    pending = list(first)
    while pending:
        _packet_type, _, body = pending.pop(0)
        topic_length = int.from_bytes(body[:2], "big")
        packet_id = int.from_bytes(body[2 + topic_length:4 + topic_length], "big")
        received.append(body[4 + topic_length:])
        raw.send(puback_packet(packet_id))
        if len(received) + len(pending) < 5:
            pending.append(raw.read_packet())
    assert received == [f"cmd {n}".encode() for n in range(5)]
    raw.close()
    srv.close()


@pytest.mark.stock_amqtt_defect("the offline queue is unbounded")
def test_offline_queue_is_bounded_and_drops_are_counted(start_broker, pki_dir, agent_ids):
    broker = start_broker(limits__max_queued="3")
    agent_id, = agent_ids(1)
    srv = connect_server(broker.port, pki_dir)
    client = connect(broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id),
                     clean=False)
    assert client.subscribe(f"epns/v1/agents/{agent_id}/cmd") == [1]
    client.close()
    time.sleep(0.3)
    for number in range(5):
        srv.publish(f"epns/v1/agents/{agent_id}/cmd", f"cmd {number}".encode())
    if broker.kind == "epns":
        broker.log_contains(rf"queue_full_drop client={agent_id} .*max_queued=3")
        assert broker.metric('epns_broker_drops_total{reason="queue_full"}') == 2
    back = connect(broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id),
                   clean=False)
    assert [back.expect().payload for _ in range(3)] == [b"cmd 2", b"cmd 3", b"cmd 4"]
    back.expect_none(0.5)
    back.close()
    srv.close()
