"""The real agent's keep-alive (epns.liveness drives it, not paho's loop_misc):
a PINGREQ on time, well before the broker gives up (1.5 x keep-alive), and a
PINGRESP that never comes noticed within the answer timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from epns.liveness import answer_timeout
from tests.support.network import FreezableRelay

KEEPALIVE = 5


@pytest.fixture
def relay(epns_broker) -> Iterator[FreezableRelay]:
    running = FreezableRelay(epns_broker.port)
    yield running
    running.close()


def test_pings_keep_an_idle_agent_connected(epns_broker, run_agent, agent_ids):
    """The broker drops a client silent for 1.5 x keep-alive: the agent's
    PINGREQs must come in time, four keep-alives in a row."""
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [epns_broker.port], keepalive={"primary": KEEPALIVE})
    agent.log_contains(rf"\bconnected route=direct:{epns_broker.port} keepalive={KEEPALIVE}")
    syncs.wait_for("connect")
    time.sleep(4 * KEEPALIVE + 1)
    assert agent.count("disconnected") == 0, "\n".join(agent.lines)
    assert not [line for line in epns_broker.lines
                if "keepalive_expired" in line and f"client={agent_id}" in line]
    code, report = agent.status()
    assert code == 0, report


def test_a_broker_gone_silent_is_noticed_and_left(relay, epns_broker, run_agent, agent_ids):
    """Half-open: the agent's PINGREQ goes out one keep-alive after it last
    heard the broker (so within a keep-alive of the freeze), the missing
    PINGRESP is noticed within the answer timeout, and the agent reconnects."""
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [relay.port], keepalive={"primary": KEEPALIVE})
    agent.log_contains(rf"\bconnected route=direct:{relay.port} keepalive={KEEPALIVE}")
    syncs.wait_for("connect")
    time.sleep(1.0)  # the on-connect sync's report has gone through
    seen = len(agent.lines)
    frozen_at = relay.freeze()
    agent.log_contains(r"disconnected route=", timeout=3 * KEEPALIVE, after=seen)
    noticed_at = time.monotonic()
    pinged_at = relay.sent_after_freeze
    assert pinged_at is not None, "the agent sent nothing after the freeze"
    assert pinged_at - frozen_at <= KEEPALIVE + 1.0
    assert noticed_at - pinged_at <= answer_timeout(KEEPALIVE) + 1.0
    agent.log_contains(rf"\bconnected route=direct:{relay.port}", timeout=15, after=seen)
