"""An agent first seen on the broker: its birth message and its first sync
reach the registry together, and both create its row. Each must be applied
(a real SQLite database, many rounds; CI once lost the presence this way)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from epns.envelope import Presence, PresenceState
from epns.server_config import PresenceSettings
from server_push.fleet.bus import Bus
from server_push.fleet.registry import Registry
from server_push.store import db

ROUNDS = 40


def test_a_birth_and_a_first_sync_racing_to_create_the_row_are_both_applied(
        tmp_path: Path) -> None:
    async def run() -> list[tuple[str, str | None, str | None]]:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
        await db.migrate(engine)
        registry = Registry(db.sessions(engine), Bus(), PresenceSettings())
        registry.link_up = True  # as with the broker link up: presence shown as recorded
        now = time.time()
        for n in range(ROUNDS):
            agent_id = f"walk-in-{n}"
            await asyncio.gather(
                registry.on_presence(agent_id, Presence(PresenceState.ONLINE, now, route="direct"),
                                     now),
                registry.on_sync(agent_id, ok=True, detail="200", reason="connect", at=now))
        seen = [(view.presence, view.route, view.last_sync_reason)
                for view in await registry.all(time.time())]
        await engine.dispose()
        return seen

    seen = asyncio.run(run())
    assert len(seen) == ROUNDS
    assert set(seen) == {("online", "direct", "connect")}
