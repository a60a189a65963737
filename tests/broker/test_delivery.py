"""Delivery guarantees: persistent sessions, redelivery, QoS, takeover."""

from __future__ import annotations

import time

import pytest

from tests.support.clients import (
    RawClient,
    agent_files,
    connect,
    connect_packet,
    connect_server,
    subscribe_packet,
)


def test_command_queued_while_offline_is_delivered_on_reconnect(any_broker, pki_dir, agent_ids):
    agent_id, = agent_ids(1)
    srv = connect_server(any_broker.port, pki_dir)
    client = connect(any_broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id),
                     clean=False)
    assert client.subscribe(f"epns/v1/agents/{agent_id}/cmd") == [1]
    client.close()
    time.sleep(0.3)
    srv.publish(f"epns/v1/agents/{agent_id}/cmd", b"wake while offline")
    back = connect(any_broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id),
                   clean=False)
    got = back.expect()
    assert (got.payload, got.qos) == (b"wake while offline", 1)
    back.close()
    srv.close()


@pytest.mark.stock_amqtt_defect("an unacked QoS 1 message is dropped")
def test_unacked_qos1_message_is_redelivered_with_dup_when_the_session_resumes(
        any_broker, pki_dir, agent_ids):
    """Stock amqtt drops an outgoing QoS 1 message when the connection closes
    before its PUBACK (and after a hard-coded 5 s)."""
    agent_id, = agent_ids(1)
    srv = connect_server(any_broker.port, pki_dir)
    raw = RawClient(any_broker.port, pki_dir, agent_id)
    raw.send(connect_packet(agent_id, clean=False))
    assert raw.read_packet()[0] == 2
    raw.send(subscribe_packet(1, f"epns/v1/agents/{agent_id}/cmd"))
    assert raw.read_packet()[0] == 9
    srv.publish(f"epns/v1/agents/{agent_id}/cmd", b"ack me")
    packet_type, flags, body = raw.read_packet()
    assert packet_type == 3
    assert flags & 0x08 == 0
    raw.close()  # gone without PUBACK
    time.sleep(6)  # past amqtt's hard-coded 5 s PUBACK timeout
    again = RawClient(any_broker.port, pki_dir, agent_id)
    again.send(connect_packet(agent_id, clean=False))
    connack = again.read_packet()
    assert connack[0] == 2
    assert connack[2][0] == 1
    packet_type, flags, body = again.read_packet()
    assert packet_type == 3
    assert flags & 0x08, "a redelivered PUBLISH must carry DUP"
    assert body.endswith(b"ack me")
    again.close()
    srv.close()


@pytest.mark.stock_amqtt_defect("delivers at the subscription's QoS")
def test_delivered_qos_is_the_minimum_of_publish_and_subscription(any_broker, pki_dir,
                                                                  agent_ids):
    """Stock amqtt delivers at the subscription's QoS whatever the publish QoS."""
    agent_id, = agent_ids(1)
    srv = connect_server(any_broker.port, pki_dir)
    client = connect(any_broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id))
    assert client.subscribe(f"epns/v1/agents/{agent_id}/cmd", qos=1) == [1]
    srv.publish(f"epns/v1/agents/{agent_id}/cmd", b"qos0", qos=0)
    assert client.expect().qos == 0
    srv.publish(f"epns/v1/agents/{agent_id}/cmd", b"qos1", qos=1)
    assert client.expect().qos == 1
    client.close()
    srv.close()


def test_reconnect_over_a_half_open_connection_takes_the_session_over(epns_broker, pki_dir,
                                                                      agent_ids):
    agent_id, = agent_ids(1)
    srv = connect_server(epns_broker.port, pki_dir)
    assert srv.subscribe(f"epns/v1/agents/{agent_id}/presence") == [1]
    stale = RawClient(epns_broker.port, pki_dir, agent_id)
    will = (f"epns/v1/agents/{agent_id}/presence", b"offline")
    stale.send(connect_packet(agent_id, clean=False, will=will))
    assert stale.read_packet()[0] == 2
    fresh = connect(epns_broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id),
                    clean=False)
    assert stale.closed_within(3) is not None
    epns_broker.log_contains(rf"takeover client={agent_id}")
    srv.expect_none(0.8)  # the old connection's will is not published on takeover
    assert fresh.subscribe(f"epns/v1/agents/{agent_id}/cmd") == [1]
    srv.publish(f"epns/v1/agents/{agent_id}/cmd", b"to the new connection")
    assert fresh.expect().payload == b"to the new connection"
    fresh.close()
    stale.close()
    srv.close()
