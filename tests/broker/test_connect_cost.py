"""Work per connection that amqtt 0.12.1 does and the broker does not: extra
tasks per plugin check and per idle read. Counted with a task factory, so the
tests are exact, not timings; each also runs amqtt's stock code to show the
count there."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.fleet_broker import FleetBroker
from broker.handler import FleetHandler
from broker.metrics import Metrics
from broker.outbox import Outbox
from broker.plugins import IDENTITY
from broker.revocation import RevocationFile
from broker.runtime import amqtt_config
from broker.session import FleetSession
from epns.broker_config import BrokerSettings
from epns.identity import identity_from_certificate
from epns.pki import agent_pair, create_client_cert, init_dev_pki
from tests.support.clients import RawClient, connect_packet
from tests.support.processes import BrokerProcess


def _tasks_made(work: Callable[[], Awaitable[Any]],
                setup: Callable[[], Any] = lambda: None) -> int:
    """Run ``setup``, then ``work`` on a fresh loop; how many tasks ``work`` created."""
    made = 0

    def factory(loop: asyncio.AbstractEventLoop,
                coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any]) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop)

    async def main() -> None:
        setup()
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        await work()
        loop.set_task_factory(None)  # asyncio.run's own shutdown tasks are not counted

    asyncio.run(main())
    return made


def _broker() -> FleetBroker:
    settings = BrokerSettings()
    return FleetBroker(amqtt_config(settings, RevocationFile(None), None), settings.limits,
                       Metrics())


def test_topic_checks_run_the_plugins_without_tasks(tmp_path: Any) -> None:
    ca = init_dev_pki(tmp_path, ("localhost",))
    pair = agent_pair(tmp_path, "agent-1")
    create_client_cert(ca, pair, "agent-1")
    der = x509.load_pem_x509_certificate(pair.cert.read_bytes()).public_bytes(Encoding.DER)
    session = FleetSession()
    session.client_id = "agent-1"
    session.attributes[IDENTITY] = identity_from_certificate(der)
    topic = "epns/v1/agents/agent-1/cmd"

    def checks(check: Callable[..., Awaitable[bool]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for _ in range(10):
                assert await check(session, topic, Action.SUBSCRIBE)
                assert not await check(session, "epns/v1/agents/agent-2/cmd", Action.SUBSCRIBE)
        return run

    brokers: list[FleetBroker] = []

    async def ours() -> None:
        await checks(brokers[-1]._topic_filtering)()

    async def stock() -> None:
        await checks(lambda *a: Broker._topic_filtering(brokers[-1], *a))()

    assert _tasks_made(ours, setup=lambda: brokers.append(_broker())) == 0
    assert _tasks_made(stock, setup=lambda: brokers.append(_broker())) == 20


class _SilentReader:
    """A client that connected and then says nothing."""

    async def read(self, n: int = -1) -> bytes:
        await asyncio.get_running_loop().create_future()
        return b""

    def feed_eof(self) -> None:
        pass


class _Writer:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def get_peer_info(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    async def close(self) -> None:
        pass


def _idle_tasks(handler_class: type[BrokerProtocolHandler], session: Session) -> int:
    async def idle() -> None:
        manager: Any = object.__new__(BrokerProtocolHandler)  # never used while idle
        handler = handler_class(manager)
        session.keep_alive = 300
        handler.attach(session, _SilentReader(), _Writer())
        if isinstance(handler, FleetHandler):
            handler.bind(SimpleNamespace(metrics=Metrics()), Outbox(1, 1))  # type: ignore[arg-type]
        await handler.start()
        await asyncio.sleep(0.05)
        await handler.stop()

    return _tasks_made(idle)


def test_an_idle_connection_is_one_reader_task() -> None:
    """amqtt 0.12.1 wraps each read in wait_for(keep-alive): a second task."""
    assert _idle_tasks(FleetHandler, FleetSession()) == 1
    assert _idle_tasks(BrokerProtocolHandler, Session()) == 2


@pytest.mark.stock_amqtt_defect("two TLS session tickets per connect that no agent uses")
def test_no_tls_session_tickets_are_sent(hardened_broker: BrokerProcess, pki_dir: Path,
                                          agent_ids: Callable[[int], list[str]]) -> None:
    """OpenSSL's default: two TLS 1.3 tickets after each handshake, about a
    fifth of the broker's CPU per connect, for resumptions that never come."""
    agent_id, = agent_ids(1)
    client = RawClient(hardened_broker.port, pki_dir, agent_id)
    client.send(connect_packet(agent_id))
    assert client.read_packet()[0] == 2  # CONNACK: the tickets, if any, came before
    assert client.sock.version() == "TLSv1.3"
    session = client.sock.session
    assert session is not None
    assert not session.has_ticket
    client.close()
