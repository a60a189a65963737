"""The session store's ends (idle, absolute, per user) on a real SQLite
database migrated as the server migrates it; the clock is the test's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server_push.security.console_sessions import SessionStore
from server_push.store import db

IDLE = 100.0
LIFETIME = 1000.0


def test_sessions_end_when_idle_when_too_old_and_per_user(tmp_path: Path) -> None:
    async def run() -> None:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
        await db.migrate(engine)
        store = SessionStore(db.sessions(engine), idle=IDLE, lifetime=LIFETIME)
        try:
            secret, view = await store.start("admin", source="127.0.0.1", user_agent="t", now=0.0)
            assert (await store.resolve(secret, now=IDLE - 1)) == view
            # Each request within the idle timeout moves its end: alive at 900,
            # long past the first idle end, ...
            for at in range(int(IDLE) - 1, 900, int(IDLE) - 1):
                assert await store.resolve(secret, now=float(at)) is not None
            # ... but not past the absolute end, however active.
            assert await store.resolve(secret, now=LIFETIME) is None
            assert await store.listed(now=LIFETIME) == []

            idle_secret, _ = await store.start("admin", source="s", user_agent="t", now=0.0)
            assert await store.resolve(idle_secret, now=IDLE + 1) is None
            # An ended session stays ended: its row is gone.
            assert await store.resolve(idle_secret, now=1.0) is None

            first, _ = await store.start("ops", source="s", user_agent="t", now=0.0)
            second, _ = await store.start("ops", source="s", user_agent="t", now=0.0)
            kept, _ = await store.start("admin", source="s", user_agent="t", now=0.0)
            assert await store.end_for_user("ops") == 2
            assert await store.resolve(first, now=1.0) is None
            assert await store.resolve(second, now=1.0) is None
            assert await store.resolve(kept, now=1.0) is not None
            assert await store.resolve("not-a-session", now=1.0) is None
        finally:
            await engine.dispose()

    asyncio.run(run())
