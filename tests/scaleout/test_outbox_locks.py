"""Two replicas' outboxes flushing one PostgreSQL table at once publish each
command once (``FOR UPDATE SKIP LOCKED``), and claims race to one winner.

A real PostgreSQL cluster and the real Outbox and claims; only the broker is a
recording stand-in, slow enough that the two flushes overlap."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from epns.envelope import Command, CommandType
from server_push.link.outbox import Outbox
from server_push.store import db
from server_push.store.handled import HandledEvents

pytestmark = pytest.mark.postgres

COMMANDS = 6


class SlowBroker:
    """Takes every publish after a pause, and remembers what it took."""

    def __init__(self, taken: Counter[str]) -> None:
        self._taken = taken

    async def publish(self, topic: str, payload: bytes) -> None:
        await asyncio.sleep(0.05)
        self._taken[payload.decode()] += 1


def test_two_outboxes_flushing_at_once_publish_each_command_once(postgres_url: str) -> None:
    async def run() -> tuple[Counter[str], list[dict[str, float]]]:
        engine = db.create_engine(postgres_url)
        await db.migrate(engine)
        sessions = db.sessions(engine)
        key = Ed25519PrivateKey.generate()
        taken: Counter[str] = Counter()
        first, second = (Outbox(sessions, lambda: key, SlowBroker(taken)) for _ in range(2))
        now = time.time()
        async with sessions() as session, session.begin():
            for n in range(COMMANDS):
                first.stage(session, Command(CommandType.WAKE, f"agent:a{n}", now, now + 600),
                            f"epns/v1/agents/a{n}/cmd")
        results = await asyncio.gather(first.flush(), second.flush())
        await engine.dispose()
        return taken, list(results)

    taken, results = asyncio.run(run())
    assert len(taken) == COMMANDS
    assert set(taken.values()) == {1}, taken
    assert sum(len(r) for r in results) == COMMANDS


def test_racing_claims_of_one_message_have_one_winner(postgres_url: str) -> None:
    async def run() -> list[bool]:
        engine = db.create_engine(postgres_url)
        await db.migrate(engine)
        replicas = [HandledEvents(db.sessions(engine)) for _ in range(4)]
        wins = await asyncio.gather(*(r.claim("epns/v1/agents/a1/presence", b"{}", time.time())
                                      for r in replicas))
        await engine.dispose()
        return list(wins)

    assert sorted(asyncio.run(run())) == [False, False, False, True]
