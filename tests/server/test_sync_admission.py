"""The sync slots and their short queue (``server_push.security.sync_admission``), as logic."""

from __future__ import annotations

import asyncio

from server_push.security.sync_admission import SyncAdmission


def test_a_waiter_gets_the_slot_that_comes_free() -> None:
    async def scenario() -> tuple[bool, bool]:
        admission = SyncAdmission(max_concurrent=1, max_queued=1, queue_wait=5.0)
        assert await admission.acquire()
        waiter = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        assert admission.waiting == 1
        admission.release()
        got = await waiter
        return got, admission.waiting == 0

    assert asyncio.run(scenario()) == (True, True)


def test_a_waiter_is_refused_when_no_slot_comes_free_in_time() -> None:
    async def scenario() -> tuple[bool, int]:
        admission = SyncAdmission(max_concurrent=1, max_queued=4, queue_wait=0.05)
        assert await admission.acquire()
        refused = await admission.acquire()
        return refused, admission.waiting

    assert asyncio.run(scenario()) == (False, 0)


def test_beyond_max_queued_a_sync_is_refused_at_once() -> None:
    async def scenario() -> tuple[bool, float]:
        admission = SyncAdmission(max_concurrent=1, max_queued=1, queue_wait=30.0)
        assert await admission.acquire()
        parked = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        refused = await admission.acquire()
        took = loop.time() - started
        parked.cancel()
        return refused, took

    refused, took = asyncio.run(scenario())
    assert refused is False
    assert took < 1.0


def test_a_slot_given_back_is_taken_again() -> None:
    async def scenario() -> list[bool]:
        admission = SyncAdmission(max_concurrent=2, max_queued=0, queue_wait=0.0)
        taken = [await admission.acquire(), await admission.acquire(), await admission.acquire()]
        admission.release()
        taken.append(await admission.acquire())
        return taken

    assert asyncio.run(scenario()) == [True, True, False, True]
