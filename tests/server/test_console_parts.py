"""The console's parts without a browser: the login throttle and the event
stream (the browser tests in test_console.py drive them end to end)."""

from __future__ import annotations

import asyncio
import json

from server_push.fleet.bus import Bus
from server_push.web.console import stream
from server_push.web.console.throttle import MAX_KEYS, LoginThrottle


def test_throttle_refuses_after_the_limit_until_the_oldest_failure_leaves_the_window() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    keys = ("user:admin", "ip:127.0.0.1")
    for at in (0.0, 10.0, 20.0):
        assert throttle.retry_after(keys, at) == 0
        throttle.failed(keys, at)
    assert throttle.retry_after(keys, 30.0) == 30.0
    # Another user from the same address waits too; the same user elsewhere as well.
    assert throttle.retry_after(("user:other", "ip:127.0.0.1"), 30.0) == 30.0
    assert throttle.retry_after(("user:admin", "ip:127.0.0.2"), 30.0) == 30.0
    assert throttle.retry_after(keys, 60.0) == 0


def test_throttle_forgets_a_user_who_logs_in_but_not_the_address() -> None:
    throttle = LoginThrottle(limit=2, window=60)
    keys = ("user:admin", "ip:127.0.0.1")
    throttle.failed(keys, 0.0)
    throttle.failed(keys, 1.0)
    throttle.succeeded("user:admin")
    assert throttle.retry_after(("user:admin",), 2.0) == 0
    assert throttle.retry_after(("ip:127.0.0.1",), 2.0) == 58.0


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(limit=1, window=60)
    for n in range(MAX_KEYS + 5):
        throttle.failed((f"user:u{n}",), 0.0)
    assert throttle.retry_after(("user:u0",), 1.0) == 0  # the oldest key made room
    assert throttle.retry_after((f"user:u{MAX_KEYS + 4}",), 1.0) == 59.0


def test_stream_sends_notices_keepalives_and_ends_when_the_bus_closes() -> None:
    async def run() -> list[str]:
        bus = Bus()
        chunks: list[str] = []

        async def consume() -> None:
            async for chunk in stream.notices(bus, keepalive=0.05):
                chunks.append(chunk)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.08)
        bus.publish({"kind": "agent", "id": "a1"})
        await asyncio.sleep(0.01)
        bus.close()
        await asyncio.wait_for(task, 1)
        return chunks

    chunks = asyncio.run(run())
    assert chunks[0] == f"retry: {stream.RETRY_MS}\n\n"
    assert ": keep-alive\n\n" in chunks
    data = [c for c in chunks if c.startswith("data: ")]
    assert [json.loads(c[6:]) for c in data] == [{"kind": "agent", "id": "a1"}]
    assert chunks[-1] == "event: closing\ndata: {}\n\n"


def test_stream_opened_after_the_bus_closed_ends_at_once() -> None:
    async def run() -> list[str]:
        bus = Bus()
        bus.close()
        return [chunk async for chunk in stream.notices(bus, keepalive=10)]

    assert asyncio.run(asyncio.wait_for(run(), 1))[-1].startswith("event: closing")
