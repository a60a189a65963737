"""The broker core in memory: the real codec, hub, core and certificates,
with a transport that records what would go on the wire. Exact counts, not
timings: what a connection and a delivered message cost in tasks and
memory, set against amqtt 0.12.1's stock objects the core replaced."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from amqtt.session import Session as StockSession
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.access import Access
from broker.connection import MQTTConnection
from broker.fleet_broker import FleetBroker
from broker.hub import ConnectionHub
from broker.metrics import Metrics
from broker.outbox import Outbox
from broker.revocation import RevocationFile
from broker.session import Session
from epns.acl_rules import AccessPolicy
from epns.broker_config import LimitSettings
from epns.identity import identity_from_certificate
from epns.mqtt import (
    Connack,
    Connect,
    Decoder,
    Packet,
    Puback,
    Publish,
    Role,
    Suback,
    Subscribe,
    encode,
)
from epns.pki import SERVER_CERT, agent_pair, create_client_cert, init_dev_pki

COUNT = 300


class _Transport:
    """Records writes; closes when asked."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """DER certificates of a dev PKI: two agents and the server."""
    root = tmp_path_factory.mktemp("pki")
    ca = init_dev_pki(root, ("localhost",))
    found = {}
    for name in ("agent-1", "agent-2"):
        pair = agent_pair(root, name)
        create_client_cert(ca, pair, name)
        found[name] = _der(pair.cert)
    found["epns-server"] = _der(root / SERVER_CERT)
    return found


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


class _Fleet:
    """A hub and core, and clients that speak through the real codec."""

    def __init__(self, certificates: dict[str, bytes]) -> None:
        limits = LimitSettings()
        metrics = Metrics()
        access = Access(RevocationFile(None), None, AccessPolicy())
        self.broker = FleetBroker(limits, metrics, access)
        self.hub = ConnectionHub(self.broker, limits, metrics, access.revocations, 60.0)
        self.certificates = certificates

    def client(self, name: str) -> tuple[MQTTConnection, _Transport, Decoder]:
        conn = MQTTConnection(self.hub, "primary", ("127.0.0.1", 1),
                              certificate=self.certificates[name])
        transport = _Transport()
        self.hub._connections.add(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport, Decoder(Role.CLIENT)

    @staticmethod
    def exchange(conn: MQTTConnection, transport: _Transport, decoder: Decoder,
                 *packets: Packet) -> list[Packet]:
        conn.data_received(b"".join(encode(packet) for packet in packets))
        answer = decoder.packets(bytes(transport.out))
        transport.out.clear()
        return answer


def _tasks_made(work: Callable[[], None]) -> int:
    made = 0

    def factory(loop: asyncio.AbstractEventLoop,
                coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(factory)
        work()
        asyncio.get_running_loop().set_task_factory(None)

    asyncio.run(main())
    return made


def test_a_connect_subscribe_and_a_hundred_deliveries_make_no_task(
        certificates: dict[str, bytes]) -> None:
    """amqtt 0.12.1 made a task per plugin check (three per connect), one per
    idle read, one per PUBLISH received and one per PUBACK: 10,000 tasks
    after a wake-all. The core handles every packet in line."""
    answers: list[Packet] = []

    def work() -> None:
        fleet = _Fleet(certificates)
        agent, agent_out, agent_in = fleet.client("agent-1")
        server, server_out, server_in = fleet.client("epns-server")
        answers.extend(fleet.exchange(agent, agent_out, agent_in, Connect("agent-1", 300),
                                      Subscribe(1, (("epns/v1/agents/agent-1/cmd", 1),))))
        answers.extend(fleet.exchange(server, server_out, server_in,
                                      Connect("epns-server", 60)))
        for number in range(1, 101):
            acked = fleet.exchange(server, server_out, server_in, Publish(
                "epns/v1/agents/agent-1/cmd", b"wake", qos=1, packet_id=number))
            assert acked == [Puback(number)]
            delivered = agent_in.packets(bytes(agent_out.out))
            agent_out.out.clear()
            assert len(delivered) == 1
            assert isinstance(delivered[0], Publish)
            assert delivered[0].packet_id is not None
            agent.data_received(encode(Puback(delivered[0].packet_id)))
        assert fleet.broker.sessions["agent-1"].outbox.inflight == 0

    assert _tasks_made(work) == 0
    assert answers == [Connack(), Suback(1, (1,)), Connack()]


def _bytes_each(make: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make() for _ in range(COUNT)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del kept
    return grown / COUNT


def test_a_session_is_a_fraction_of_amqtts(certificates: dict[str, bytes]) -> None:
    """Measured: about 0.3 KiB here (outbox included), 23 KiB for amqtt
    0.12.1's Session (a transitions Machine and two queues each)."""
    identity = identity_from_certificate(certificates["agent-1"])
    ours = _bytes_each(lambda: Session("agent-1", identity, Outbox(32, 1000), clean=False))
    stock = _bytes_each(StockSession)
    assert ours < 1024, f"Session: {ours:.0f} B each"
    assert stock > 8 * 1024, f"stock amqtt Session: {stock:.0f} B each"


def test_an_idle_connection_object_is_small(certificates: dict[str, bytes]) -> None:
    """The connection, its decoder and its empty buffer (the TLS transport
    is measured by ``python -m bench tls-memory``)."""
    async def measure() -> float:
        fleet = _Fleet(certificates)
        return _bytes_each(lambda: MQTTConnection(fleet.hub, "primary", ("127.0.0.1", 1)))
    ours = asyncio.run(measure())
    assert ours < 1536, f"MQTTConnection: {ours:.0f} B each"


def test_the_expiry_check_does_not_scan_the_connected_fleet(
        certificates: dict[str, bytes]) -> None:
    """amqtt 0.12.1's session monitor read every session twice a second (2.7 %
    of a core with 10,000 agents idle). The core looks at expired ones only."""

    class Counting(dict[str, Session]):
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

    async def scans() -> int:
        fleet = _Fleet(certificates)
        identity = identity_from_certificate(certificates["agent-1"])
        sessions = Counting()
        for number in range(1000):
            sessions[f"a{number}"] = Session(f"a{number}", identity, Outbox(1, 1), clean=False)
        fleet.broker.sessions = sessions
        await fleet.broker.start()
        await asyncio.sleep(1.2)
        await fleet.broker.shutdown()
        return sessions.scans

    assert asyncio.run(scans()) == 0


def test_one_client_cannot_hold_the_loop_with_a_burst(certificates: dict[str, bytes]) -> None:
    """A chunk of a thousand packets is handled a batch per turn of the loop,
    reading paused in between, so the other clients are served."""
    async def run() -> tuple[int, bool, int]:
        fleet = _Fleet(certificates)
        agent, agent_out, agent_in = fleet.client("agent-1")
        fleet.exchange(agent, agent_out, agent_in, Connect("agent-1", 300))
        agent.data_received(encode(Publish("epns/v1/agents/agent-1/evt", b"{}", qos=1,
                                           packet_id=1)) * 1000)
        first_turn = len(agent_in.packets(bytes(agent_out.out)))
        agent_out.out.clear()
        paused = not agent_out.reading
        for _ in range(30):
            await asyncio.sleep(0)
        return first_turn, paused, len(agent_in.packets(bytes(agent_out.out)))

    first_turn, paused, rest = asyncio.run(run())
    assert first_turn < 1000
    assert paused
    assert first_turn + rest == 1000
