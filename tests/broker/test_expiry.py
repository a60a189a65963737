"""Offline sessions expire after limits.session_expiry, without scanning the fleet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from amqtt.broker import Broker

from broker.expiry import SessionExpiry
from broker.fleet_broker import FleetBroker
from broker.metrics import Metrics
from broker.revocation import RevocationFile
from broker.runtime import amqtt_config
from broker.session import FleetSession
from epns.broker_config import BrokerSettings
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


class _CountingSessions(dict[str, Any]):
    """amqtt's session table, counting the scans of it."""

    scans = 0

    def items(self) -> Any:
        self.scans += 1
        return super().items()

    def values(self) -> Any:
        self.scans += 1
        return super().values()

    def __iter__(self) -> Iterator[str]:
        self.scans += 1
        return super().__iter__()


def _broker_with_connected_fleet(size: int) -> FleetBroker:
    settings = BrokerSettings()
    broker = FleetBroker(amqtt_config(settings, RevocationFile(None), None), settings.limits,
                         Metrics())
    sessions = _CountingSessions()
    for number in range(size):
        session = FleetSession()
        session.client_id = f"agent-{number}"
        session.transitions.connect()
        sessions[session.client_id] = (session, None)
    broker._sessions = sessions
    return broker


def test_expiry_does_not_scan_the_connected_fleet_and_stock_amqtt_does() -> None:
    """amqtt 0.12.1's monitor reads every session's state twice a second."""

    async def scans(stock: bool) -> int:
        broker = _broker_with_connected_fleet(1000)
        monitor = Broker._session_monitor(broker) if stock else broker._session_monitor()
        task = asyncio.create_task(monitor)
        await asyncio.sleep(1.2)  # the first check runs at once (stock) or after 1 s (ours)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sessions = broker._sessions
        assert isinstance(sessions, _CountingSessions)
        assert len(sessions) == 1000
        return sessions.scans

    assert asyncio.run(scans(stock=False)) == 0
    assert asyncio.run(scans(stock=True)) >= 2


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
