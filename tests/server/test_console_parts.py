"""The console's parts without a browser: the login throttle and the event
stream (the browser tests in test_console.py drive them end to end)."""

from __future__ import annotations

import asyncio
import json

from server_push.fleet.bus import Bus
from server_push.web.console import device_cookie, stream
from server_push.web.console.throttle import MAX_KEYS, Key, LoginThrottle, login_keys


def _keys(source: str, account: str, device: str | None = None) -> tuple[Key, ...]:
    return login_keys(source, account, device=device, limit=3, source_limit=5)


def test_throttle_refuses_a_pair_after_the_limit_until_the_oldest_failure_leaves() -> None:
    throttle = LoginThrottle(window=60)
    keys = _keys("127.0.0.1", "admin")
    for at in (0.0, 10.0, 20.0):
        assert throttle.retry_after(keys, at) == 0
        throttle.failed(keys, at)
    assert throttle.retry_after(keys, 30.0) == 30.0
    # The same user from elsewhere, another user from here, and the user's own
    # browser (its device cookie) from here may all try.
    assert throttle.retry_after(_keys("127.0.0.2", "admin"), 30.0) == 0
    assert throttle.retry_after(_keys("127.0.0.1", "other"), 30.0) == 0
    assert throttle.retry_after(_keys("127.0.0.1", "admin", device="n1"), 30.0) == 0
    assert throttle.retry_after(keys, 60.0) == 0


def test_throttle_refuses_an_address_spraying_accounts() -> None:
    throttle = LoginThrottle(window=60)
    for n in range(5):
        throttle.failed(_keys("198.18.0.1", f"user{n}"), float(n))
    assert throttle.retry_after(_keys("198.18.0.1", "admin"), 5.0) == 55.0
    assert throttle.retry_after(_keys("198.18.0.2", "admin"), 5.0) == 0
    assert throttle.retry_after(_keys("198.18.0.1", "admin", device="n1"), 5.0) == 0


def test_a_device_key_has_the_pair_limit() -> None:
    throttle = LoginThrottle(window=60)
    stolen = _keys("198.18.0.9", "admin", device="n1")
    for at in (0.0, 1.0, 2.0):
        throttle.failed(stolen, at)
    assert throttle.retry_after(stolen, 3.0) == 57.0


def test_a_login_forgets_its_pair_but_not_its_address() -> None:
    throttle = LoginThrottle(window=60)
    for n in range(4):
        throttle.failed(_keys("127.0.0.1", f"user{n % 2}"), float(n))
    throttle.succeeded(_keys("127.0.0.1", "user0"))
    assert throttle.retry_after((Key("pair:127.0.0.1|user0", 3),), 4.0) == 0
    assert throttle.retry_after((Key("source:127.0.0.1", 4),), 4.0) == 56.0


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(window=60)
    for n in range(MAX_KEYS + 5):
        throttle.failed((Key(f"pair:x|u{n}", 1),), 0.0)
    assert throttle.retry_after((Key("pair:x|u0", 1),), 1.0) == 0  # the oldest made room
    assert throttle.retry_after((Key(f"pair:x|u{MAX_KEYS + 4}", 1),), 1.0) == 59.0


def test_device_cookies_are_bound_to_the_account_and_the_secret() -> None:
    value = device_cookie.issue("server-secret", "admin")
    nonce = device_cookie.device_of("server-secret", "admin", value)
    assert nonce is not None
    assert value.startswith(nonce + ".")
    assert device_cookie.device_of("server-secret", "other", value) is None
    assert device_cookie.device_of("another-secret", "admin", value) is None
    assert device_cookie.device_of("server-secret", "admin", nonce + ".00") is None
    assert device_cookie.device_of("server-secret", "admin", None) is None


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
