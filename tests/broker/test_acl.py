"""The ACL matrix, retained messages included, against both brokers."""

from __future__ import annotations

import pytest

from tests.support.clients import agent_files, connect, connect_server

DENIED = 0x80



def agent(broker, pki_dir, agent_id, **kwargs):
    return connect(broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id), **kwargs)


def test_agent_receives_only_its_own_commands(any_broker, pki_dir, agent_ids):
    me, other = agent_ids(2)
    srv, mine = connect_server(any_broker.port, pki_dir), agent(any_broker, pki_dir, me)
    assert mine.subscribe(f"epns/v1/agents/{me}/cmd") == [1]
    spying = mine.subscribe(f"epns/v1/agents/{other}/cmd")
    if any_broker.kind == "epns":
        assert spying == [DENIED]
    srv.publish(f"epns/v1/agents/{other}/cmd", b"for the other")
    srv.publish(f"epns/v1/agents/{me}/cmd", b"for me")
    got = mine.expect()
    assert (got.topic, got.payload) == (f"epns/v1/agents/{me}/cmd", b"for me")
    mine.expect_none(0.5)
    mine.close()
    srv.close()


@pytest.mark.parametrize("topic_filter", ["#", "epns/#", "epns/v1/agents/+/cmd", "$SYS/#",
                                          "epns/v1/agents/+/evt"])
def test_agent_wildcard_and_sys_probing_gets_nothing(any_broker, pki_dir, agent_ids,
                                                     topic_filter):
    me, other = agent_ids(2)
    srv, probe = connect_server(any_broker.port, pki_dir), agent(any_broker, pki_dir, me)
    codes = probe.subscribe(topic_filter)
    if any_broker.kind == "epns":
        assert codes == [DENIED]
    victim = agent(any_broker, pki_dir, other)
    victim.publish(f"epns/v1/agents/{other}/evt", b"private event")
    srv.publish(f"epns/v1/agents/{other}/cmd", b"private command")
    probe.expect_none(0.8)
    for client in (probe, victim, srv):
        client.close()


def test_fan_out_reaches_every_subscribed_agent_with_one_publish(any_broker, pki_dir, agent_ids):
    ids = agent_ids(4)
    srv = connect_server(any_broker.port, pki_dir)
    agents = [agent(any_broker, pki_dir, agent_id) for agent_id in ids]
    for client in agents:
        assert client.subscribe("epns/v1/all/cmd") == [1]
    srv.publish("epns/v1/all/cmd", b"wake all")
    assert [client.expect().payload for client in agents] == [b"wake all"] * 4
    for client in [*agents, srv]:
        client.close()


def test_agent_publishes_only_its_own_events_and_presence(any_broker, pki_dir, agent_ids):
    me, other = agent_ids(2)
    srv, mine = connect_server(any_broker.port, pki_dir), agent(any_broker, pki_dir, me)
    assert srv.subscribe("epns/v1/agents/+/evt") == [1]
    theirs = agent(any_broker, pki_dir, other)
    assert theirs.subscribe(f"epns/v1/agents/{other}/cmd") == [1]
    mine.publish(f"epns/v1/agents/{other}/evt", b"forged event")
    mine.publish(f"epns/v1/agents/{other}/cmd", b"forged command")
    mine.publish(f"epns/v1/agents/{me}/evt", b"my event")
    got = srv.expect()
    assert (got.topic, got.payload) == (f"epns/v1/agents/{me}/evt", b"my event")
    srv.expect_none(0.5)
    theirs.expect_none(0.3)
    if any_broker.kind == "epns":
        # One line per client and second (the first of its two denied publishes).
        any_broker.log_contains(rf"publish_denied client={me} topic=epns/v1/agents/{other}/evt")
    for client in (mine, theirs, srv):
        client.close()


def test_only_the_server_role_publishes_commands(any_broker, pki_dir, agent_ids):
    me, = agent_ids(1)
    mine = agent(any_broker, pki_dir, me)
    assert mine.subscribe("epns/v1/all/cmd") == [1]
    mine.publish("epns/v1/all/cmd", b"agent pretending to be the server")
    mine.expect_none(0.8)
    mine.close()


def test_retained_presence_is_delivered_only_to_whom_the_acl_allows(any_broker, pki_dir,
                                                                     agent_ids):
    owner, snoop = agent_ids(2)
    publisher = agent(any_broker, pki_dir, owner)
    presence = f"epns/v1/agents/{owner}/presence"
    publisher.publish(presence, b'{"state":"online"}', retain=True)
    srv = connect_server(any_broker.port, pki_dir)
    # The exact topic: the broker is shared, other tests leave retained presence.
    assert srv.subscribe(presence) == [1]
    got = srv.expect()
    assert (got.topic, got.retain) == (presence, True)
    spy = agent(any_broker, pki_dir, snoop)
    spy.subscribe(presence)
    spy.subscribe("#")
    spy.expect_none(0.8)
    publisher.publish(presence, b"", retain=True)  # clear it for other tests
    for client in (publisher, srv, spy):
        client.close()


@pytest.mark.stock_amqtt_defect("retained messages skip the ACL")
def test_retained_messages_do_not_leak_to_a_new_connection(hardened_broker, pki_dir, agent_ids):
    """Stock amqtt sends a connecting client every retained message matching
    *any* client's subscription, with no ACL check."""
    owner, newcomer = agent_ids(2)
    srv = connect_server(hardened_broker.port, pki_dir)
    # The exact topic: the broker is shared, other tests leave retained presence.
    assert srv.subscribe(f"epns/v1/agents/{owner}/presence") == [1]
    publisher = agent(hardened_broker, pki_dir, owner)
    publisher.publish(f"epns/v1/agents/{owner}/presence", b"online", retain=True)
    assert srv.expect().payload == b"online"
    fresh = agent(hardened_broker, pki_dir, newcomer, clean=False)
    fresh.expect_none(1.0)
    publisher.publish(f"epns/v1/agents/{owner}/presence", b"", retain=True)
    for client in (fresh, publisher, srv):
        client.close()
