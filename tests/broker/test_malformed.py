"""A malformed packet closes that client and nothing else."""

from __future__ import annotations

import pytest

from tests.support.clients import RawClient, agent_files, connect, connect_packet

GARBAGE = {
    "SUBSCRIBE with wrong flags": bytes([0x80, 0x05, 0, 1, 0, 1, 0x61]),
    "remaining length over 4 bytes": bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    "topic length past the packet": bytes([0x30, 0x04, 0x00, 0x40, 0x61, 0x62]),
    "PUBLISH with QoS 3": bytes([0x36, 0x02, 0x00, 0x00]),
}


@pytest.mark.stock_amqtt_defect("a malformed packet is not closed cleanly")
@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
def test_malformed_packet_closes_only_that_client(hardened_broker, pki_dir, agent_ids, garbage):
    closes_only_that_client(hardened_broker, pki_dir, agent_ids, garbage)


def test_reserved_packet_type_closes_only_that_client(hardened_broker, pki_dir, agent_ids):
    """Stock amqtt gets this one right: no stock case."""
    closes_only_that_client(hardened_broker, pki_dir, agent_ids, bytes([0x00, 0x00]))


def closes_only_that_client(hardened_broker, pki_dir, agent_ids, garbage):
    bad, good = agent_ids(2)
    srv = connect(hardened_broker.port, pki_dir, "epns-server",
                  cert=(pki_dir / "server.crt", pki_dir / "server.key"))
    bystander = connect(hardened_broker.port, pki_dir, good, cert=agent_files(pki_dir, good))
    assert bystander.subscribe(f"epns/v1/agents/{good}/cmd") == [1]
    raw = RawClient(hardened_broker.port, pki_dir, bad)
    raw.send(connect_packet(bad))
    assert raw.read_packet()[0] == 2
    raw.send(garbage)
    assert raw.closed_within(3) is not None
    srv.publish(f"epns/v1/agents/{good}/cmd", b"unaffected")
    assert bystander.expect().payload == b"unaffected"
    assert hardened_broker.process.poll() is None
    raw.close()
    bystander.close()
    srv.close()


def test_first_packet_that_is_not_connect_is_refused(epns_broker, pki_dir):
    raw = RawClient(epns_broker.port, pki_dir, "a001")
    raw.send(bytes([0xC0, 0x00]))  # PINGREQ before CONNECT
    assert raw.closed_within(3) is not None
    epns_broker.log_contains(
        r"protocol_violation .*the first packet is PINGREQ, not CONNECT.* rule=MQTT-3.1.0-1")
    raw.close()
