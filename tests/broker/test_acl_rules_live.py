"""Integrator topics in a running epns broker: [[acl.rules]] widen the
contract's ACL, and never inside its namespace."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.support.clients import agent_files, connect, connect_server
from tests.support.processes import ROOT, broker_env

DENIED = 0x80
RULES = [
    {"identities": ["*"], "access": "readwrite", "topics": ["site/%c/#"]},
    {"identities": ["*"], "access": "read", "topics": ["site/broadcast"]},
    {"identities": ["epns-server"], "access": "write", "topics": ["site/broadcast"]},
    {"identities": ["*"], "access": "deny", "topics": ["site/+/secret"]},
]


@pytest.fixture
def ruled(start_broker):
    return start_broker(acl__rules=json.dumps(RULES))


def agent(broker, pki_dir, agent_id, **kwargs):
    return connect(broker.port, pki_dir, agent_id, cert=agent_files(pki_dir, agent_id), **kwargs)


def test_rules_admit_each_client_to_its_own_integrator_topics(ruled, pki_dir, agent_ids):
    me, other = agent_ids(2)
    mine, theirs = agent(ruled, pki_dir, me), agent(ruled, pki_dir, other)
    assert mine.subscribe(f"site/{me}/status") == [1]
    assert mine.subscribe(f"site/{other}/status") == [DENIED]
    assert mine.subscribe("site/+/status") == [DENIED]  # not covered by site/<me>/#
    assert mine.subscribe(f"site/{me}/#") == [DENIED]  # overlaps the deny of site/+/secret
    theirs.publish(f"site/{me}/status", b"forged")  # acknowledged, dropped
    mine.publish(f"site/{me}/status", b"mine", retain=True)
    got = mine.expect()
    assert (got.topic, got.payload) == (f"site/{me}/status", b"mine")
    mine.expect_none(0.5)
    ruled.log_contains(rf"publish_denied client={other} topic=site/{me}/status")
    # The retained message goes to a later subscription the rules allow.
    reader = agent(ruled, pki_dir, other)
    assert reader.subscribe(f"site/{me}/status") == [DENIED]
    reader.expect_none(0.3)
    mine.close()
    again = agent(ruled, pki_dir, me)
    assert again.subscribe(f"site/{me}/status") == [1]
    got = again.expect()
    assert (got.payload, got.retain) == (b"mine", True)


def test_a_read_rule_and_a_write_rule_meet_on_one_topic(ruled, pki_dir, agent_ids):
    me, = agent_ids(1)
    listener = agent(ruled, pki_dir, me)
    assert listener.subscribe("site/broadcast") == [1]
    listener.publish("site/broadcast", b"agents only read it")
    srv = connect_server(ruled.port, pki_dir)
    srv.publish("site/broadcast", b"from the server")
    assert listener.expect().payload == b"from the server"
    listener.expect_none(0.5)


def test_rules_leave_the_contract_alone(ruled, pki_dir, agent_ids):
    me, other = agent_ids(2)
    mine, theirs = agent(ruled, pki_dir, me), agent(ruled, pki_dir, other)
    assert theirs.subscribe(f"epns/v1/agents/{other}/cmd") == [1]
    assert mine.subscribe(f"epns/v1/agents/{other}/cmd") == [DENIED]
    assert mine.subscribe("#") == [DENIED]
    mine.publish(f"epns/v1/agents/{other}/cmd", b"forged command")
    theirs.expect_none(0.5)
    srv = connect_server(ruled.port, pki_dir)
    srv.publish(f"epns/v1/agents/{other}/cmd", b"real command")
    assert theirs.expect().payload == b"real command"


def test_a_rule_in_the_contract_namespace_stops_the_broker_at_start(pki_dir):
    bad = [{"identities": ["*"], "access": "read", "topics": ["epns/v1/agents/+/cmd"]}]
    done = subprocess.run([sys.executable, "-m", "broker"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False,
                          env=broker_env(pki_dir, acl__rules=json.dumps(bad)))
    assert done.returncode != 0
    assert re.search(r"rules\[0\]: acl rule topic 'epns/v1/agents/\+/cmd' is in the wire "
                     "contract's namespace", done.stderr), done.stderr
