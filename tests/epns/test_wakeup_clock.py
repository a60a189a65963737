"""Putting an agent's sync start on the server's clock (``epns.wakeup``)."""

from __future__ import annotations

from epns.wakeup import ClockOffset, best_offset, clock_offset, satisfies, server_time


def test_an_offset_is_skew_plus_transit() -> None:
    sample = clock_offset(agent_now=1_000.0, server_now=1_005.25)
    assert sample == ClockOffset(offset=5.25, seen_at=1_005.25)


def test_a_held_up_event_does_not_move_a_sync_after_the_request() -> None:
    # The agent's clock is 2 s behind. Its ack arrived at once; its sync
    # report, sent when a sync that ran 100.0-101.0 (agent clock) ended, was
    # held 3 s by a broker failover. A wake-up was requested at 103.5 on the
    # server's clock, after that sync had ended (103.0 on the server's clock).
    kept = best_offset(None, clock_offset(agent_now=99.0, server_now=101.0))
    late = clock_offset(agent_now=101.0, server_now=106.0)
    offset = best_offset(kept, late)
    assert offset == kept
    assert server_time(100.0, offset) == 102.0
    assert not satisfies(sync_started_at=server_time(100.0, offset), requested_at=103.5)
    # Trusting the held-up report alone would have counted it:
    assert satisfies(sync_started_at=server_time(100.0, late), requested_at=103.5)


def test_a_smaller_offset_replaces_the_kept_one() -> None:
    kept = ClockOffset(offset=4.0, seen_at=50.0)
    sample = ClockOffset(offset=2.0, seen_at=60.0)
    assert best_offset(kept, sample) == sample


def test_an_old_offset_gives_way_so_clock_changes_are_followed() -> None:
    # The agent's clock was stepped: every offset is now larger. After
    # max_age the new readings are taken even though they are larger.
    kept = ClockOffset(offset=1.0, seen_at=0.0)
    newer = ClockOffset(offset=30.0, seen_at=500.0)
    assert best_offset(kept, newer, max_age=600.0) == kept
    later = ClockOffset(offset=30.0, seen_at=700.0)
    assert best_offset(kept, later, max_age=600.0) == later
