"""No TLS session tickets: OpenSSL sends two after each TLS 1.3 handshake
by default, about a fifth of the broker's CPU per connect, for resumptions
that never come (agents do not resume, and a restarted broker could not
read its predecessor's tickets)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.clients import RawClient, connect_packet
from tests.support.processes import BrokerProcess


@pytest.mark.stock_amqtt_defect("two TLS session tickets per connect that no agent uses")
def test_no_tls_session_tickets_are_sent(hardened_broker: BrokerProcess, pki_dir: Path,
                                          agent_ids: Callable[[int], list[str]]) -> None:
    agent_id, = agent_ids(1)
    client = RawClient(hardened_broker.port, pki_dir, agent_id)
    client.send(connect_packet(agent_id))
    assert client.read_packet()[0] == 2  # CONNACK: the tickets, if any, came before
    assert client.sock.version() == "TLSv1.3"
    session = client.sock.session
    assert session is not None
    assert not session.has_ticket
    client.close()
