"""Message claims (``server_push/store/handled.py``) on a real SQLite database, and
the bus's relay to other replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from server_push.fleet.bus import Bus
from server_push.store import db
from server_push.store.handled import HandledEvents, message_key


def test_a_message_is_claimed_once_and_claims_are_pruned(tmp_path: Path) -> None:
    async def run() -> tuple[list[bool], int, bool]:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'claims.db'}")
        await db.migrate(engine)
        handled = HandledEvents(db.sessions(engine))
        topic = "epns/v1/agents/a1/evt"
        claims = [await handled.claim(topic, b'{"at":1}', 100.0),
                  await handled.claim(topic, b'{"at":1}', 101.0),  # a QoS 1 redelivery
                  await handled.claim(topic, b'{"at":2}', 102.0),  # another event
                  await handled.claim("epns/v1/agents/a2/evt", b'{"at":1}', 103.0)]
        pruned = await handled.prune(before=102.5)
        again = await handled.claim(topic, b'{"at":1}', 200.0)  # forgotten after pruning
        await engine.dispose()
        return claims, pruned, again

    claims, pruned, again = asyncio.run(run())
    assert claims == [True, False, True, True]
    assert pruned == 2
    assert again is True


def test_message_key_tells_topics_apart() -> None:
    assert message_key("a/b", b"c") == message_key("a/b", b"c")
    assert message_key("a/b", b"c") != message_key("a/bc", b"")


def test_the_bus_relays_what_it_publishes_but_not_what_it_delivers() -> None:
    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bus = Bus()
        relayed: list[dict[str, Any]] = []
        bus.relay = relayed.append
        async with bus.subscribe() as queue:
            bus.publish({"kind": "agent", "id": "a1"})
            bus.deliver({"kind": "wakeup", "id": "w1"})  # from another replica
            bus.close()
            local = [queue.get_nowait() for _ in range(queue.qsize())]
        return relayed, local

    relayed, local = asyncio.run(run())
    assert relayed == [{"kind": "agent", "id": "a1"}]
    assert local == [{"kind": "agent", "id": "a1"}, {"kind": "wakeup", "id": "w1"},
                     {"kind": "closing"}]
