"""The broker core in memory: the real codec, hub, core and certificates,
with a transport that records what would go on the wire. Exact counts, not
timings: what a connection and a delivered message cost in tasks and
memory, set against amqtt 0.12.1's stock objects the core replaced."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any

from amqtt.session import Session as StockSession

from broker.connection import MQTTConnection
from broker.outbox import Outbox
from broker.session import Session
from epns.broker_config import LimitSettings
from epns.identity import identity_from_certificate
from epns.mqtt import (
    Connack,
    Connect,
    Packet,
    Puback,
    Publish,
    Suback,
    Subscribe,
    encode,
)
from tests.support.broker_core import CoreFleet

COUNT = 300


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
        fleet = CoreFleet(certificates)
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
        fleet = CoreFleet(certificates)
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
        fleet = CoreFleet(certificates)
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
        fleet = CoreFleet(certificates)
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


def _core_run(certificates: dict[str, bytes], work: Callable[[CoreFleet], None],
              limits: LimitSettings | None = None) -> CoreFleet:
    fleet_box: list[CoreFleet] = []

    async def main() -> None:
        fleet = CoreFleet(certificates)
        if limits is not None:
            fleet.broker.limits = limits
        fleet_box.append(fleet)
        work(fleet)

    asyncio.run(main())
    return fleet_box[0]


def test_a_server_gets_every_retained_presence_past_max_queued(
        certificates: dict[str, bytes]) -> None:
    """1,500 retained presences, the server subscribes and acks as they come:
    all 1,500 arrive (1,032 did, the rest dropped unsaid, with the outbox's
    max_queued of 1,000 applied to the replay)."""
    got: list[str] = []

    def work(fleet: CoreFleet) -> None:
        for number in range(1500):
            fleet.broker.publish(f"epns/v1/agents/a{number}/presence", b"{}", 1, retain=True,
                                 sender=f"a{number}")
        server, out, decoder = fleet.client("epns-server")
        fleet.exchange(server, out, decoder, Connect("epns-server", 60))
        answers = fleet.exchange(server, out, decoder,
                                 Subscribe(1, (("epns/v1/agents/+/presence", 1),)))
        while True:
            publishes = [p for p in answers if isinstance(p, Publish)]
            if not publishes:
                break
            got.extend(p.topic for p in publishes)
            answers = fleet.exchange(server, out, decoder,
                                     *(Puback(p.packet_id or 0) for p in publishes))

    fleet = _core_run(certificates, work)
    assert len(got) == 1500
    assert len(set(got)) == 1500
    assert not fleet.broker.metrics.drops


def test_unreleased_qos2_ids_are_bounded_and_a_denied_one_is_not_kept(
        certificates: dict[str, bytes]) -> None:
    """Any agent could park 65,535 QoS 2 ids (5 MiB) in its session for the
    session's lifetime, denied publishes included."""
    state: dict[str, object] = {}

    def work(fleet: CoreFleet) -> None:
        agent, out, decoder = fleet.client("agent-1")
        fleet.exchange(agent, out, decoder, Connect("agent-1", 300))
        for number in range(1, 200):  # denied: another agent's topic
            fleet.exchange(agent, out, decoder, Publish(
                "epns/v1/agents/agent-2/evt", b"{}", qos=2, packet_id=number))
        state["after_denied"] = fleet.broker.sessions["agent-1"].qos2_pending
        limit = fleet.broker.limits.max_inflight
        for number in range(1, limit + 2):  # allowed, never released
            fleet.exchange(agent, out, decoder, Publish(
                "epns/v1/agents/agent-1/evt", b"{}", qos=2, packet_id=number))
        state["closed"] = out.closing
        state["kept"] = len(fleet.broker.sessions["agent-1"].qos2_pending or ())

    fleet = _core_run(certificates, work)
    assert state["after_denied"] is None
    assert state["closed"] is True
    assert state["kept"] == fleet.broker.limits.max_inflight


def test_retained_topics_past_max_retained_are_routed_not_kept(
        certificates: dict[str, bytes]) -> None:
    def work(fleet: CoreFleet) -> None:
        for number in range(5):
            fleet.broker.publish(f"site/{number}", b"x", 0, retain=True, sender="agent-1")
        fleet.broker.publish("site/0", b"y", 0, retain=True, sender="agent-1")  # replaces

    fleet = _core_run(certificates, work, LimitSettings(max_retained=3))
    assert sorted(fleet.broker.retained) == ["site/0", "site/1", "site/2"]
    assert fleet.broker.retained["site/0"].payload == b"y"
    assert fleet.broker.metrics.drops["retained_limit"] == 2


def test_qos0_to_a_subscriber_that_does_not_read_is_dropped_and_counted(
        certificates: dict[str, bytes]) -> None:
    def work(fleet: CoreFleet) -> None:
        agent, out, decoder = fleet.client("agent-1")
        fleet.exchange(agent, out, decoder, Connect("agent-1", 300),
                       Subscribe(1, (("epns/v1/all/cmd", 0),)))
        agent.pause_writing()  # its transport's buffer is full
        fleet.broker.route("epns/v1/all/cmd", b"wake", 1)
        assert decoder.packets(bytes(out.out)) == []
        agent.resume_writing()
        fleet.broker.route("epns/v1/all/cmd", b"wake", 1)
        assert len(decoder.packets(bytes(out.out))) == 1

    fleet = _core_run(certificates, work)
    assert fleet.broker.metrics.drops["slow_qos0"] == 1
