"""An agent's ack (through the broker) and its sync (straight to the server)
cross all the time: each must move a wake target once, so the target is
delivered once in the agent's history and in the metrics, and satisfied
once. A real SQLite database (and PostgreSQL), the real Wakeups and Registry, many rounds;
only the broker is a stand-in (nothing is published here).

Before the one door (a conditional UPDATE whose RETURNING rows decide who
writes the line), the sync read the target before SQLite's deferred BEGIN:
an ack committed between that read and the sync's write was recorded, and
the sync recorded "delivered" again."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from epns.errors import Conflict
from epns.server_config import PresenceSettings, WakeupSettings
from epns.wakeup import WakeState
from server_push.fleet.bus import Bus
from server_push.fleet.registry import Registry
from server_push.fleet.wakeups import Wakeups
from server_push.link.metrics import ServerMetrics
from server_push.link.mqtt_link import LinkHealth
from server_push.link.outbox import Outbox, OutboxCounts
from server_push.store import db
from server_push.store.models import Agent, AgentEvent, WakeTarget, Wakeup

ROUNDS = 40


class NoBroker:
    """The outbox's publisher; these tests publish nothing."""

    async def publish(self, topic: str, payload: bytes) -> None:
        raise AssertionError(f"nothing should be published ({topic})")


async def _server_parts(url: str) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession],
                                          Wakeups, ServerMetrics]:
    """A migrated database and the server's real Wakeups over it (no broker)."""
    engine = db.create_engine(url)
    await db.migrate(engine)
    sessions = db.sessions(engine)
    bus = Bus()
    metrics = ServerMetrics(LinkHealth(None, None), lambda: True, OutboxCounts())
    registry = Registry(sessions, bus, PresenceSettings())
    outbox = Outbox(sessions, lambda: None, NoBroker())  # type: ignore[arg-type,return-value]
    return engine, sessions, Wakeups(sessions, outbox, bus, WakeupSettings(), metrics,
                                     registry=registry), metrics


def test_an_ack_and_a_sync_crossing_deliver_and_satisfy_once(tmp_path: Path) -> None:
    _cross(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")


@pytest.mark.postgres
def test_the_same_on_postgresql(postgres_url: str) -> None:
    _cross(postgres_url)


def _cross(url: str) -> None:
    """ROUNDS agents, each with a requested target whose ack and sync are
    applied at once."""
    async def run() -> tuple[list[tuple[str, int]], list[str], ServerMetrics]:
        engine, sessions, wakeups, metrics = await _server_parts(url)
        now = time.time()
        async with sessions() as session, session.begin():
            session.add(Wakeup(id="w", created_at=now, expires_at=now + 600, requested_by="t",
                               target_kind="agents", target=[]))
            await session.flush()
            for n in range(ROUNDS):
                session.add(Agent(id=f"a{n}", groups=[], auth="certificate", created_at=now,
                                  interfaces=[], inventory={}, presence="online"))
                session.add(WakeTarget(wakeup_id="w", agent_id=f"a{n}", requested_at=now,
                                       expires_at=now + 600, command_id=f"c{n}",
                                       published_at=now))
        later = now + 1.0
        for n in range(ROUNDS):
            await asyncio.gather(
                wakeups.on_ack(f"a{n}", f"c{n}", later),
                wakeups.on_sync(f"a{n}", started_at=later, sync_id=uuid.uuid4().hex,
                                wakes=[f"c{n}"], now=later))
        async with sessions() as session:
            delivered = (await session.execute(
                select(AgentEvent.agent_id, func.count()).where(AgentEvent.kind == "wake_delivered")
                .group_by(AgentEvent.agent_id))).all()
            states = list((await session.scalars(select(WakeTarget.state))).all())
        await engine.dispose()
        return [(row[0], row[1]) for row in delivered], states, metrics

    delivered, states, metrics = asyncio.run(run())
    assert states == [WakeState.SATISFIED.value] * ROUNDS
    twice = [agent for agent, count in delivered if count != 1]
    assert not twice, f"delivered more than once in the history of {twice}"
    assert len(delivered) == ROUNDS
    assert metrics.wake_transitions[WakeState.DELIVERED.value] == ROUNDS
    assert metrics.wake_transitions[WakeState.SATISFIED.value] == ROUNDS


def test_a_cancel_and_a_sync_crossing_move_each_target_once(tmp_path: Path) -> None:
    _cancel_against_sync(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")


@pytest.mark.postgres
def test_a_cancel_and_a_sync_crossing_on_postgresql(postgres_url: str) -> None:
    _cancel_against_sync(postgres_url)


def _cancel_against_sync(url: str) -> None:
    """ROUNDS wake-ups of one delivered target each, cancelled while the
    agent's sync lands: each target ends satisfied or cancelled, and is
    counted once. Before the cancel was a conditional UPDATE it read the
    pending targets, then wrote them: a sync committed in between was
    counted satisfied and then overwritten as cancelled."""
    async def run() -> tuple[list[str], ServerMetrics]:
        engine, sessions, wakeups, metrics = await _server_parts(url)
        now = time.time()
        async with sessions() as session, session.begin():
            for n in range(ROUNDS):
                session.add(Wakeup(id=f"w{n}", created_at=now, expires_at=now + 600,
                                   requested_by="t", target_kind="agents", target=[]))
                session.add(Agent(id=f"a{n}", groups=[], auth="certificate", created_at=now,
                                  interfaces=[], inventory={}, presence="online"))
            await session.flush()
            for n in range(ROUNDS):
                session.add(WakeTarget(wakeup_id=f"w{n}", agent_id=f"a{n}", requested_at=now,
                                       expires_at=now + 600, command_id=f"c{n}",
                                       published_at=now, delivered_at=now,
                                       state=WakeState.DELIVERED.value))
        later = now + 1.0
        for n in range(ROUNDS):
            cancel, _ = await asyncio.gather(
                wakeups.cancel("t", f"w{n}"),
                wakeups.on_sync(f"a{n}", started_at=later, sync_id=uuid.uuid4().hex,
                                wakes=[f"c{n}"], now=later),
                return_exceptions=True)
            # The sync first: nothing is left to cancel, and the cancel says so.
            if isinstance(cancel, BaseException):
                assert isinstance(cancel, Conflict), cancel
                assert cancel.code == "wakeup_finished", cancel
        async with sessions() as session:
            states = list((await session.scalars(select(WakeTarget.state))).all())
        await engine.dispose()
        return states, metrics

    states, metrics = asyncio.run(run())
    satisfied = states.count(WakeState.SATISFIED.value)
    cancelled = states.count(WakeState.CANCELLED.value)
    assert satisfied + cancelled == ROUNDS, states
    assert metrics.wake_transitions[WakeState.SATISFIED.value] == satisfied
    assert metrics.wake_transitions[WakeState.CANCELLED.value] == cancelled
