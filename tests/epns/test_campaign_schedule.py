"""The campaign calendar and the cap, pure (epns.campaign_schedule, epns.pacing).

Times are built from local wall-clock times through zoneinfo in the test and
compared with what the module computes; DST days are the 2026 EU ones
(Europe/Paris: 29 March 02:00 -> 03:00, 25 October 03:00 -> 02:00) and the
2026 US ones (America/New_York: 8 March, 1 November)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from epns.campaign_schedule import (
    MAX_MISSED,
    InvalidSchedule,
    describe,
    due,
    next_slot,
    parse_schedule,
    slots_after,
)
from epns.pacing import Cap, admit, eta

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600.0


def local(zone: ZoneInfo, *parts: int, fold: int = 0) -> float:
    year, month, day, hour, minute = parts
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).timestamp()


def test_weekly_tuesday_0200_in_paris() -> None:
    schedule = parse_schedule("weekly", "02:00", "Europe/Paris", 2 * HOUR, [1])
    # 2026-12-08 is a Tuesday; from the Monday before, the next slots are Tuesdays 02:00 CET.
    slots = slots_after(schedule, local(PARIS, 2026, 12, 7, 12, 0), 3)
    assert slots == [local(PARIS, 2026, 12, day, 2, 0) for day in (8, 15, 22)]
    assert all(datetime.fromtimestamp(s, PARIS).weekday() == 1 for s in slots)
    # Strictly after: at the slot itself, the next is a week on.
    assert next_slot(schedule, slots[0]) == slots[1]
    assert describe(schedule) == "every Tue at 02:00 (Europe/Paris), 2 h window"


def test_weekly_several_days_and_daily_in_order() -> None:
    schedule = parse_schedule("weekly", "23:30", "America/New_York", HOUR, [4, 0])
    slots = slots_after(schedule, local(NEW_YORK, 2026, 12, 7, 23, 45), 4)  # a Monday
    assert [datetime.fromtimestamp(s, NEW_YORK).strftime("%a %H:%M") for s in slots] == [
        "Fri 23:30", "Mon 23:30", "Fri 23:30", "Mon 23:30"]
    daily = parse_schedule("daily", "00:00:30", "UTC", 600)
    assert slots_after(daily, 0.0, 2) == [30.0, 86430.0]


def test_spring_gap_runs_once_an_hour_later_on_the_new_offset() -> None:
    # 02:30 does not exist in Paris on 29 March 2026: it runs at 03:30 CEST,
    # 24 h after the day before's 02:30 CET less the lost hour.
    schedule = parse_schedule("daily", "02:30", "Europe/Paris", HOUR)
    slots = slots_after(schedule, local(PARIS, 2026, 3, 28, 12, 0), 2)
    assert datetime.fromtimestamp(slots[0], PARIS).strftime("%m-%d %H:%M %Z") == "03-29 03:30 CEST"
    assert slots[0] - local(PARIS, 2026, 3, 28, 2, 30) == 24 * HOUR
    assert datetime.fromtimestamp(slots[1], PARIS).strftime("%m-%d %H:%M") == "03-30 02:30"


def test_autumn_overlap_runs_once_at_the_first_occurrence() -> None:
    # 02:30 happens twice in Paris on 25 October 2026 (CEST, then CET).
    schedule = parse_schedule("daily", "02:30", "Europe/Paris", HOUR)
    slots = slots_after(schedule, local(PARIS, 2026, 10, 24, 12, 0), 3)
    first = local(PARIS, 2026, 10, 25, 2, 30, fold=0)
    assert slots[0] == first
    assert local(PARIS, 2026, 10, 25, 2, 30, fold=1) not in slots
    assert slots[1] - slots[0] == 25 * HOUR  # the day is 25 h long
    assert datetime.fromtimestamp(slots[1], PARIS).strftime("%m-%d %H:%M %Z") == "10-26 02:30 CET"


def test_new_york_transitions_keep_the_wall_clock() -> None:
    schedule = parse_schedule("weekly", "09:00", "America/New_York", HOUR, [6])
    slots = slots_after(schedule, local(NEW_YORK, 2026, 3, 1, 10, 0), 2)  # Sunday 1 March
    assert [datetime.fromtimestamp(s, NEW_YORK).strftime("%m-%d %H:%M %Z") for s in slots] == [
        "03-08 09:00 EDT", "03-15 09:00 EDT"]
    assert slots[0] - local(NEW_YORK, 2026, 3, 1, 9, 0) == 7 * 24 * HOUR - HOUR


def test_once_in_its_zone_and_then_never() -> None:
    schedule = parse_schedule("once", "2026-12-15T02:00", "Asia/Tokyo", 7200)
    slot = datetime(2026, 12, 15, 2, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    assert slots_after(schedule, slot - 1, 5) == [slot]
    assert next_slot(schedule, slot) is None


def test_missed_runs_while_down_run_once_late_inside_the_window() -> None:
    schedule = parse_schedule("daily", "02:00", "Europe/Paris", 2 * HOUR)
    down = local(PARIS, 2026, 12, 4, 12, 0)
    # Back up on the 8th at 03:00: the 8th's 02:00 is inside its window, it
    # runs late; the 5th, 6th and 7th are missed.
    found = due(schedule, down, local(PARIS, 2026, 12, 8, 3, 0))
    assert found.run == local(PARIS, 2026, 12, 8, 2, 0)
    assert found.missed == tuple(local(PARIS, 2026, 12, d, 2, 0) for d in (5, 6, 7))
    assert found.missed_more == 0
    assert found.next == local(PARIS, 2026, 12, 9, 2, 0)
    # Back at 04:00, the window has closed: nothing runs, the 8th is missed too.
    late = due(schedule, down, local(PARIS, 2026, 12, 8, 4, 0))
    assert late.run is None
    assert late.missed[-1] == local(PARIS, 2026, 12, 8, 2, 0)
    # Looked at again a second later: each slot is handed out once.
    again = due(schedule, local(PARIS, 2026, 12, 8, 3, 0), local(PARIS, 2026, 12, 8, 3, 0) + 1)
    assert again.run is None
    assert again.missed == ()


def test_a_year_down_keeps_the_newest_missed_slots_and_counts_the_rest() -> None:
    schedule = parse_schedule("daily", "02:00", "UTC", HOUR)
    start = datetime(2025, 1, 1, 12).timestamp()
    found = due(schedule, start, start + 400 * 86400)
    assert len(found.missed) == MAX_MISSED
    assert found.missed_more + MAX_MISSED == 400
    assert found.missed[-1] > found.missed[0]


@pytest.mark.parametrize(("args", "code", "words"), [
    (("hourly", "02:00", "UTC", 3600.0), "invalid_schedule", "kind"),
    (("daily", "2:00", "UTC", 3600.0), "invalid_schedule", "HH:MM"),
    (("daily", "24:00", "UTC", 3600.0), "invalid_schedule", "HH:MM"),
    (("daily", "02:00", "Mars/Olympus", 3600.0), "invalid_timezone", "IANA"),
    (("daily", "02:00", "../../etc/passwd", 3600.0), "invalid_timezone", "IANA"),
    (("daily", "02:00", "America", 3600.0), "invalid_timezone", "IANA"),
    (("daily", "02:00", "zone.tab", 3600.0), "invalid_timezone", "IANA"),
    (("daily", "02:00", "UTC", 10.0), "invalid_schedule", "window"),
    (("weekly", "02:00", "UTC", 3600.0, []), "invalid_schedule", "days"),
    (("weekly", "02:00", "UTC", 3600.0, [7]), "invalid_schedule", "days"),
    (("daily", "02:00", "UTC", 3600.0, [1]), "invalid_schedule", "weekly"),
    (("once", "2026-13-01T02:00", "UTC", 3600.0), "invalid_schedule", "date"),
    (("once", "2026-12-01T02:00+01:00", "UTC", 3600.0), "invalid_schedule", "offset"),
])
def test_bad_schedules_say_which_field(args: tuple, code: str, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(*args)
    assert caught.value.status == 422
    assert caught.value.code == code
    assert words in caught.value.detail


def test_cap_admits_up_to_the_limit_in_any_interval() -> None:
    cap = Cap(3, 30.0)
    first = admit(cap, [], 100.0, 5)
    assert (first.granted, first.next_at) == (3, 130.0)
    # Two sent at 100, one at 110: at 125 nothing fits; at 130 the two age out.
    sends = [100.0, 100.0, 110.0]
    assert admit(cap, sends, 125.0, 1).granted == 0
    assert admit(cap, sends, 125.0, 1).next_at == 130.0
    assert admit(cap, sends, 130.0, 5).granted == 2
    assert admit(cap, sends, 130.0, 5).next_at == 140.0
    assert admit(cap, sends, 140.0, 1).granted == 1


def test_eta_of_queued_sends() -> None:
    cap = Cap(1000, 30.0)
    # 2,400 queued with an empty window: 1,000 now, 1,000 at +30 s, 400 at +60 s.
    assert eta(cap, [], 0.0, 2400) == 60.0
    assert eta(cap, [], 0.0, 1000) == 0.0
    assert eta(Cap(2, 2.0), [9.0, 9.5], 10.0, 3) == 13.0


def test_a_recurring_campaign_with_a_cap_on_a_clock_the_test_drives() -> None:
    """A week of a daily campaign of 7 targets capped at 2 per 2 s, simulated
    on a clock this test moves: each run starts at its slot, sends at most 2
    in any 2 s, none is dropped, and the last send's time is the ETA given
    when the run started."""
    cap = Cap(2, 2.0)
    schedule = parse_schedule("daily", "02:00", "Europe/Paris", 600)
    now = local(PARIS, 2026, 3, 27, 12, 0)  # across the spring DST change
    looked = now
    sends: list[float] = []
    runs: list[float] = []
    for _ in range(7 * 24 * 60):  # a week, a tick a minute
        now += 60.0
        found = due(schedule, looked, now)
        looked = now
        assert found.missed == ()
        if found.run is None:
            continue
        runs.append(found.run)
        queued, clock, promised = 7, now, eta(cap, sends, now, 7)
        while queued:
            granted = admit(cap, sends, clock, queued)
            sends.extend([clock] * granted.granted)
            queued -= granted.granted
            if queued:
                assert granted.next_at is not None
                assert granted.next_at > clock
                clock = granted.next_at
        assert sends[-1] == promised
        assert all(sum(1 for s in sends if t - 2.0 < s <= t) <= 2 for t in sends)
    assert len(runs) == 7
    assert len(sends) == 49
    # 29 March's 02:00 falls in the DST gap: that run is at 03:00 CEST.
    assert [datetime.fromtimestamp(r, PARIS).strftime("%d %H:%M") for r in runs] == [
        "28 02:00", "29 03:00", "30 02:00", "31 02:00", "01 02:00", "02 02:00", "03 02:00"]


def test_next_runs_preview_from_a_local_time() -> None:
    schedule = parse_schedule("weekly", "02:00", "Europe/Paris", 7200, [1])
    start = datetime(2026, 12, 8, 1, 0, tzinfo=PARIS)
    slots = slots_after(schedule, start.timestamp(), 2)
    assert slots[0] - start.timestamp() == HOUR
    assert slots[1] - slots[0] == timedelta(days=7).total_seconds()
