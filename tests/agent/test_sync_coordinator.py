"""SyncCoordinator: one sync at a time, and requests made meanwhile coalesce."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

import pytest

from agent_push.sync import SyncCoordinator, SyncOutcome, SyncRequest
from epns.sync_contract import SyncReason


class FakeAction:
    """A sync action that each test releases by hand: ``release()`` ends the oldest sync."""

    def __init__(self) -> None:
        self.started: list[SyncRequest] = []
        self._gates: list[asyncio.Event] = []
        self.crash = False

    async def __call__(self, request: SyncRequest) -> SyncOutcome:
        self.started.append(request)
        gate = asyncio.Event()
        self._gates.append(gate)
        await gate.wait()
        if self.crash:
            raise RuntimeError("bug in the action")
        return SyncOutcome(True, "fake sync", 204, 0.0)

    async def release(self) -> None:
        """End the running sync, and let the coordinator take its next step."""
        while not self._gates:
            await asyncio.sleep(0)
        self._gates.pop(0).set()
        for _ in range(5):
            await asyncio.sleep(0)


class Harness:
    def __init__(self, on_done: Callable[[SyncRequest, SyncOutcome], Awaitable[None]] | None = None
                 ) -> None:
        self.action = FakeAction()
        self.done: list[tuple[SyncRequest, SyncOutcome]] = []
        # One clock for the coordinator and the test: a request "at T" is a tick of it.
        self.clock = itertools.count(1).__next__
        self.coordinator = SyncCoordinator(self.action, on_done or self._record,
                                           clock=lambda: float(self.clock()))

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
        assert request.wakes == ()
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
        h.coordinator.request("wake", wake_id="w1")
        h.coordinator.request("wake", wake_id="w2")
        h.coordinator.request("interval")
        h.coordinator.request("wake", wake_id="w1")
        await h.action.release()
        await h.action.release()
        await h.coordinator.idle()
        assert [r for r, _ in h.done] == h.action.started
        first, follow_up = h.action.started
        assert first is running
        assert first.wakes == ()
        assert follow_up.reason is SyncReason.WAKE
        assert follow_up.wakes == ("w1", "w2")
        # The delivery contract: the answering sync started after the wake.
        assert follow_up.started_at > requested_at > first.started_at

    run(scenario)


def test_requests_before_the_sync_starts_make_one_sync() -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("connect")
        h.coordinator.request("wake", wake_id="w1")
        await h.action.release()
        await h.coordinator.idle()
        [request] = h.action.started
        assert request.reason is SyncReason.WAKE
        assert request.wakes == ("w1",)

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
        h.coordinator.request("wake", wake_id="w1")
        await h.action.release()
        await h.coordinator.idle()
        [(request, outcome)] = h.done
        assert request.wakes == ("w1",)
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
        h.coordinator.request("wake", wake_id="w1")
        await h.action.release()
        await h.action.release()
        await h.coordinator.idle()
        assert [r.wakes for r in h.action.started] == [(), ("w1",)]

    run(scenario)
    assert "sync_on_done_failed" in caplog.text
    assert "status file not writable" in caplog.text


def test_each_sync_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("wake", wake_id="w1")
        await h.action.release()
        await h.coordinator.idle()

    with caplog.at_level(logging.INFO, logger="agent.sync"):
        run(scenario)
    [line] = [r.getMessage() for r in caplog.records if r.name == "agent.sync"]
    assert line.startswith("sync_done id=")
    assert "reason=wake wakes=w1 status=204" in line


def test_close_cancels_the_running_sync_and_forgets_the_wanted_one() -> None:
    async def scenario() -> None:
        h = Harness()
        h.coordinator.request("connect")
        await asyncio.sleep(0)
        h.coordinator.request("wake", wake_id="w1")
        await h.coordinator.close()
        await h.coordinator.idle()
        h.coordinator.request("wake", wake_id="w2")
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
