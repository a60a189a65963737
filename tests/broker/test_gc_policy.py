"""broker.gc_policy: survivors frozen, and the rare full collection, on an explicit clock."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from broker import gc_policy
from broker.gc_policy import GCPolicy
from epns.broker_config import GCSettings

T0 = 1000.0


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    """The policy acts on the test process's own collector: undo it."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Cycle:
    """A reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def _frozen(obj: object) -> bool:
    # gc.get_objects() lists generations 0 to 2, never the frozen objects.
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_start_freezes_what_exists() -> None:
    before = _Cycle()
    GCPolicy(GCSettings()).start(T0)
    assert _frozen(before)
    assert not _frozen(_Cycle())


def test_tick_freezes_survivors() -> None:
    policy = GCPolicy(GCSettings())
    policy.start(T0)
    survivor = _Cycle()
    policy.tick(T0 + 1)
    assert _frozen(survivor)


def test_a_frozen_cycle_is_freed_by_the_full_collection() -> None:
    policy = GCPolicy(GCSettings())
    policy.start(T0)
    cycle = _Cycle()
    ref = weakref.ref(cycle)
    policy.tick(T0 + 1)
    del cycle
    gc.collect()
    assert ref() is not None  # out of the automatic collections' reach
    assert policy.full_collection(T0 + 2) >= 1
    assert ref() is None


def _policy(monkeypatch: pytest.MonkeyPatch, peak: list[int]) -> tuple[GCPolicy, list[float]]:
    """A started policy whose process peak memory is ``peak[0]``, and the times
    it ran a full collection."""
    monkeypatch.setattr(gc_policy, "peak_memory", lambda: peak[0])
    policy = GCPolicy(GCSettings(freeze_interval=1.0, full_collection_interval=600.0))
    policy.start(T0)
    runs: list[float] = []
    monkeypatch.setattr(policy, "full_collection", runs.append)
    return policy, runs


def test_full_collection_waits_for_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    peak = [100_000]
    policy, runs = _policy(monkeypatch, peak)
    peak[0] = 200_000
    policy.tick(T0 + 599)
    assert runs == []  # grown, but start-up was a full collection
    policy.tick(T0 + 600)
    assert runs == [T0 + 600]


def test_full_collection_waits_for_a_quarter_more_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    peak = [100_000]
    policy, runs = _policy(monkeypatch, peak)
    policy.tick(T0 + 10_000)
    peak[0] = 125_000
    policy.tick(T0 + 10_001)
    assert runs == []  # not more than a quarter
    peak[0] = 125_001
    policy.tick(T0 + 10_002)
    assert runs == [T0 + 10_002]


@pytest.mark.parametrize(("peak_after", "at", "due"), [
    (300_000, T0 + 1_199, False),  # grown enough, but the clock restarted at T0 + 600
    (300_000, T0 + 1_200, True),
    (250_000, T0 + 9_999, False),  # measured from the 200,000 of the last one
    (250_001, T0 + 9_999, True),
])
def test_a_full_collection_restarts_the_clock_and_the_memory(
        monkeypatch: pytest.MonkeyPatch, peak_after: int, at: float, due: bool) -> None:
    peak = [100_000]
    monkeypatch.setattr(gc_policy, "peak_memory", lambda: peak[0])
    policy = GCPolicy(GCSettings(freeze_interval=1.0, full_collection_interval=600.0))
    policy.start(T0)
    peak[0] = 200_000
    policy.tick(T0 + 600)  # a real full collection
    runs: list[float] = []
    monkeypatch.setattr(policy, "full_collection", runs.append)
    peak[0] = peak_after
    policy.tick(at)
    assert runs == ([at] if due else [])


def test_peak_memory_is_the_process_peak() -> None:
    assert gc_policy.peak_memory() > 0


def test_zero_interval_keeps_stock_gc() -> None:
    policy = GCPolicy(GCSettings(freeze_interval=0.0))
    policy.start(T0)
    assert gc.get_freeze_count() == 0
    asyncio.run(asyncio.wait_for(policy.run(), timeout=1))  # returns at once
    assert gc.get_freeze_count() == 0


def test_run_ticks_every_interval() -> None:
    policy = GCPolicy(GCSettings(freeze_interval=0.01))

    async def main() -> None:
        task = asyncio.create_task(policy.run())
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() > 0
        task.cancel()

    asyncio.run(main())
