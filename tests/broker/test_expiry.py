"""Offline sessions expire after limits.session_expiry, without scanning the fleet."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from broker.expiry import SessionExpiry
from tests.support.clients import RawClient, connect_packet, subscribe_packet
from tests.support.processes import BrokerProcess

T0 = 1000.0


def test_due_returns_the_sessions_offline_for_the_ttl_oldest_first() -> None:
    expiry = SessionExpiry(ttl=10)
    expiry.disconnected("a", T0)
    expiry.disconnected("b", T0 + 1)
    expiry.disconnected("c", T0 + 2)
    assert expiry.due(T0 + 9) == []
    assert expiry.due(T0 + 11) == ["a", "b"]
    assert len(expiry) == 1
    assert expiry.due(T0 + 11) == []
    assert expiry.due(T0 + 12) == ["c"]


def test_a_client_that_comes_back_is_forgotten_and_a_new_disconnect_restarts_its_clock() -> None:
    expiry = SessionExpiry(ttl=10)
    expiry.disconnected("a", T0)
    expiry.disconnected("b", T0 + 1)
    expiry.forget("b")
    expiry.disconnected("a", T0 + 5)  # back and gone again
    expiry.forget("nobody")
    assert expiry.due(T0 + 12) == []
    assert expiry.due(T0 + 15) == ["a"]
    assert len(expiry) == 0


def _connack_session_present(port: int, pki_dir: Path, agent_id: str) -> int:
    client = RawClient(port, pki_dir, agent_id)
    client.send(connect_packet(agent_id, clean=False))
    packet_type, _, body = client.read_packet()
    assert packet_type == 2
    assert body[1] == 0
    client.close()
    return body[0] & 1


def test_an_offline_session_expires_after_session_expiry(
        start_broker: Callable[..., BrokerProcess], pki_dir: Path,
        agent_ids: Callable[[int], list[str]]) -> None:
    broker = start_broker(limits__session_expiry="2")
    agent_id, = agent_ids(1)
    raw = RawClient(broker.port, pki_dir, agent_id)
    raw.send(connect_packet(agent_id, clean=False))
    assert raw.read_packet()[0] == 2
    raw.send(subscribe_packet(1, f"epns/v1/agents/{agent_id}/cmd"))
    assert raw.read_packet()[0] == 9
    raw.close()
    time.sleep(0.5)
    assert _connack_session_present(broker.port, pki_dir, agent_id) == 1  # kept, for now
    broker.log_contains(rf"session_expired client={agent_id}", timeout=6)
    assert _connack_session_present(broker.port, pki_dir, agent_id) == 0
