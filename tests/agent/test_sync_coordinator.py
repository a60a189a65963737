"""SyncCoordinator: one sync at a time, requests made meanwhile coalesce, and
a failed sync is retried on the RetrySchedule, carrying its wake ids."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable

import pytest

from agent_push.sync import RETRY_FLOOR, RetrySchedule, SyncCoordinator, SyncOutcome, SyncRequest
from epns.agent_config import SyncSettings
from epns.sync_contract import SyncReason

FAILED = SyncOutcome(False, "server answered 503: service unavailable", 503, 0.0)


class FakeAction:
    """A sync action that each test releases by hand: ``release()`` ends the oldest sync."""

    def __init__(self) -> None:
        self.started: list[SyncRequest] = []
        self._gates: list[asyncio.Event] = []
        self.crash = False
        # How the next syncs end, in order; then they succeed.
        self.outcomes: list[SyncOutcome] = []

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        self.started.append(request)
        gate = asyncio.Event()
        self._gates.append(gate)
        await gate.wait()
        if self.crash:
            raise RuntimeError("bug in the action")
        return self.outcomes.pop(0) if self.outcomes else SyncOutcome(True, "fake sync", 204, 0.0)

    async def release(self) -> None:
        """End the running sync, and let the coordinator take its next step."""
        while not self._gates:
            await asyncio.sleep(0)
        self._gates.pop(0).set()
        for _ in range(5):
            await asyncio.sleep(0)


class FixedDelays(RetrySchedule):
    """A schedule whose delays the test sets; it records what it was asked."""

    def __init__(self, delay: float) -> None:
        super().__init__(1.0, lambda: 600.0)
        self.delay = delay
        self.asked: list[float | None] = []
        self.resets = 0

    def next_delay(self, asked: float | None = None) -> float:
        self.failures += 1
        self.asked.append(asked)
        return self.delay

    def reset(self) -> None:
        super().reset()
        self.resets += 1


class Harness:
    def __init__(self, on_done: Callable[[SyncRequest, SyncOutcome], Awaitable[None]] | None = None,
                 retry_delay: float = 3600.0) -> None:
        self.action = FakeAction()
        self.done: list[tuple[SyncRequest, SyncOutcome]] = []
        # One clock for the coordinator and the test: a request "at T" is a tick of it.
        self.clock = itertools.count(1).__next__
        self.retry = FixedDelays(retry_delay)
        self.coordinator = SyncCoordinator(self.action, on_done or self._record,
                                           retry=self.retry, clock=lambda: float(self.clock()))

    async def _record(self, request: SyncRequest, outcome: SyncOutcome) -> None:
        self.done.append((request, outcome))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_a_request_while_idle_starts_a_sync_at_once() -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("connect")
        await h.action.release()
        await h.coordinator.idle()
        [(request, outcome)] = h.done
        assert request.reason is SyncReason.CONNECT
        assert request.command_ids == ()
        assert outcome.ok
        assert len(request.sync_id) == 32

    run(scenario)


def test_a_wake_during_a_sync_is_answered_by_exactly_one_more_sync() -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("interval")
        await asyncio.sleep(0)
        [running] = h.action.started
        requested_at = h.clock()
        h.coordinator.request("wake", command_id="w1")
        h.coordinator.request("wake", command_id="w2")
        h.coordinator.request("interval")
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.action.release()
        await h.coordinator.idle()
        assert [r for r, _ in h.done] == h.action.started
        first, follow_up = h.action.started
        assert first is running
        assert first.command_ids == ()
        assert follow_up.reason is SyncReason.WAKE
        assert follow_up.command_ids == ("w1", "w2")
        # The delivery contract: the answering sync started after the wake.
        assert follow_up.started_at > requested_at > first.started_at

    run(scenario)


def test_requests_before_the_sync_starts_make_one_sync() -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("connect")
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.coordinator.idle()
        [request] = h.action.started
        assert request.reason is SyncReason.WAKE
        assert request.command_ids == ("w1",)

    run(scenario)


@pytest.mark.parametrize(("reasons", "merged"), [
    (["interval", "connect"], SyncReason.CONNECT),
    (["manual", "interval"], SyncReason.MANUAL),
    (["connect", "manual", "wake", "interval"], SyncReason.WAKE),
])
def test_the_merged_reason_is_the_most_telling(reasons: list[str], merged: SyncReason) -> None:
    async def scenario() -> None:
        h = Harness()
        for reason in reasons:
            h.coordinator.request(reason)
        await h.action.release()
        await h.coordinator.idle()
        assert [r.reason for r in h.action.started] == [merged]

    run(scenario)


def test_an_unknown_reason_is_a_programming_error() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="reboot"):
            Harness().coordinator.request("reboot")

    run(scenario)


def test_a_request_from_on_done_runs_another_sync() -> None:
    async def scenario() -> None:
        async def on_done(request: SyncRequest, outcome: SyncOutcome) -> None:
            if request.reason is SyncReason.CONNECT:
                h.coordinator.request("manual")

        h = Harness(on_done)
        h.coordinator.request("connect")
        await h.action.release()
        await h.action.release()
        await h.coordinator.idle()
        assert [r.reason for r in h.action.started] == [SyncReason.CONNECT, SyncReason.MANUAL]

    run(scenario)


def test_a_crashing_action_is_a_failed_sync_and_syncing_goes_on() -> None:
    async def scenario() -> None:
        h = Harness()
        h.action.crash = True
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.coordinator.idle()
        [(request, outcome)] = h.done
        assert request.command_ids == ("w1",)
        assert not outcome.ok
        assert outcome.detail == "sync action crashed: RuntimeError: bug in the action"
        h.action.crash = False
        h.coordinator.request("interval")
        await h.action.release()
        await h.coordinator.idle()
        assert h.done[-1][1].ok

    run(scenario)


def test_a_failing_on_done_does_not_stop_the_next_sync(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async def on_done(request: SyncRequest, outcome: SyncOutcome) -> None:
            raise OSError("status file not writable")

        h = Harness(on_done)
        h.coordinator.request("connect")
        await asyncio.sleep(0)
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.action.release()
        await h.coordinator.idle()
        assert [r.command_ids for r in h.action.started] == [(), ("w1",)]

    run(scenario)
    assert "sync_on_done_failed" in caplog.text
    assert "status file not writable" in caplog.text


def test_each_sync_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.coordinator.idle()

    with caplog.at_level(logging.INFO, logger="agent_push.sync"):
        run(scenario)
    [line] = [r.getMessage() for r in caplog.records if r.name == "agent_push.sync"]
    assert line.startswith("sync_done id=")
    assert "reason=wake command_ids=w1 status=204" in line


def test_close_cancels_the_running_sync_and_forgets_the_wanted_one() -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("connect")
        await asyncio.sleep(0)
        h.coordinator.request("wake", command_id="w1")
        await h.coordinator.close()
        await h.coordinator.idle()
        h.coordinator.request("wake", command_id="w2")
        await asyncio.sleep(0)
        assert [r.reason for r in h.action.started] == [SyncReason.CONNECT]
        assert h.done == []

    run(scenario)


def test_idle_returns_at_once_when_nothing_runs() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.coordinator.idle()
        await h.coordinator.close()

    run(scenario)


# --- retrying a failed sync -------------------------------------------------------


def test_the_retry_bound_doubles_from_the_base_with_full_jitter() -> None:
    schedule = RetrySchedule(15.0, lambda: 600.0, rng=random.Random(3))
    for failures in range(8):
        bound = min(600.0, 15.0 * 2 ** failures)
        draws = []
        for _ in range(200):
            schedule.failures = failures
            draws.append(schedule.next_delay())
        assert min(draws) >= RETRY_FLOOR
        assert max(draws) <= bound
        # Full jitter: the draws spread over the whole bound, not around its middle.
        assert min(draws) < 0.1 * bound + RETRY_FLOOR
        assert max(draws) > 0.9 * bound
    assert schedule.failures == 8


def test_each_failure_counts_and_a_success_resets() -> None:
    schedule = RetrySchedule(1.0, lambda: 600.0, rng=random.Random(1))
    delays = [schedule.next_delay() for _ in range(12)]
    assert schedule.failures == 12
    assert all(RETRY_FLOOR <= d <= min(600.0, 2.0 ** n) for n, d in enumerate(delays))
    schedule.reset()
    assert schedule.failures == 0
    assert schedule.next_delay() == RETRY_FLOOR  # uniform(0, 1) is below the floor


def test_the_retry_never_waits_beyond_the_current_interval() -> None:
    interval = [600.0]
    schedule = RetrySchedule(15.0, lambda: interval[0], rng=random.Random(2))
    schedule.failures = 1000  # far beyond what a float's exponent holds
    assert schedule.next_delay() <= 600.0
    interval[0] = 30.0  # a server hint changed the interval
    assert max(schedule.next_delay() for _ in range(100)) <= 30.0
    # Below the floor, the interval wins: the interval sync would come anyway.
    interval[0] = 0.5
    assert schedule.next_delay() == 0.5


def test_a_busy_servers_retry_after_is_a_minimum_up_to_the_interval() -> None:
    schedule = RetrySchedule(15.0, lambda: 600.0, rng=random.Random(4))
    assert schedule.next_delay(asked=120.0) >= 120.0
    assert schedule.next_delay(asked=3600.0) == 600.0


def test_retry_base_is_at_least_a_second() -> None:
    assert SyncSettings().retry_base == 15.0
    with pytest.raises(ValueError, match=r"sync\.retry_base must be at least 1 s"):
        SyncSettings(retry_base=0.5)


def test_a_failed_sync_is_retried_with_its_command_ids() -> None:
    async def scenario() -> None:
        h = Harness(retry_delay=0.01)
        h.action.outcomes = [FAILED, FAILED]
        h.coordinator.request("wake", command_id="w1")
        for _ in range(3):
            await h.action.release()
            await asyncio.sleep(0.05)  # the retry's delay
        await h.coordinator.idle()
        first, second, third = h.action.started
        assert (first.reason, first.command_ids) == (SyncReason.WAKE, ("w1",))
        # A retry is a sync of its own, started after the failure.
        assert [r.reason for r in (second, third)] == [SyncReason.RETRY] * 2
        assert second.command_ids == third.command_ids == ("w1",)
        assert len({r.sync_id for r in h.action.started}) == 3
        assert first.started_at < second.started_at < third.started_at
        assert [o.ok for _, o in h.done] == [False, False, True]
        assert (h.retry.failures, h.retry.resets) == (0, 1)
        await asyncio.sleep(0.05)
        assert len(h.action.started) == 3  # no retry after the success

    run(scenario)


def test_a_busy_servers_wait_goes_to_the_schedule() -> None:
    async def scenario() -> None:
        h = Harness()
        h.action.outcomes = [SyncOutcome(False, "busy", 429, 0.0, retry_after=900.0)]
        h.coordinator.request("interval")
        await h.action.release()
        await h.coordinator.idle()
        assert h.retry.asked == [900.0]
        await h.coordinator.close()

    run(scenario)


def test_a_wake_during_the_backoff_syncs_at_once_and_takes_the_retrys_place() -> None:
    async def scenario() -> None:
        h = Harness(retry_delay=0.2)
        h.action.outcomes = [FAILED]
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.coordinator.idle()
        h.coordinator.request("wake", command_id="w2")
        await h.action.release()
        await h.coordinator.idle()
        await asyncio.sleep(0.3)  # past the retry that was scheduled
        assert [(r.reason, r.command_ids) for r in h.action.started] == [
            (SyncReason.WAKE, ("w1",)), (SyncReason.WAKE, ("w1", "w2"))]
        assert h.done[-1][1].ok

    run(scenario)


def test_the_command_ids_of_every_failed_sync_are_carried_until_one_succeeds() -> None:
    async def scenario() -> None:
        h = Harness()
        h.action.outcomes = [FAILED, FAILED]
        for wake in ("w1", "w2"):
            h.coordinator.request("wake", command_id=wake)
            await h.action.release()
            await h.coordinator.idle()
        h.coordinator.request("interval")
        await h.action.release()
        await h.coordinator.idle()
        assert [r.command_ids for r in h.action.started] == [("w1",), ("w1", "w2"), ("w1", "w2")]
        h.coordinator.request("interval")
        await h.action.release()
        await h.coordinator.idle()
        assert h.action.started[-1].command_ids == ()  # answered: not carried any more

    run(scenario)


def test_close_cancels_the_scheduled_retry() -> None:
    async def scenario() -> None:
        h = Harness(retry_delay=0.05)
        h.action.outcomes = [FAILED]
        h.coordinator.request("connect")
        await h.action.release()
        await h.coordinator.idle()
        await h.coordinator.close()
        await asyncio.sleep(0.1)
        assert len(h.action.started) == 1

    run(scenario)


def test_a_scheduled_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness(retry_delay=12.5)
        h.action.outcomes = [FAILED]
        h.coordinator.request("wake", command_id="w1")
        await h.action.release()
        await h.coordinator.idle()
        await h.coordinator.close()

    with caplog.at_level(logging.INFO, logger="agent_push.sync"):
        run(scenario)
    [line] = [r.getMessage() for r in caplog.records if "sync_retry_scheduled" in r.getMessage()]
    assert line.endswith("delay=12.5 failures=1 command_ids=w1")

