"""When a wake campaign runs: its schedule, sans-IO (docs/campaigns.md).

A schedule is one of three small recurrences, each in a time zone the admin
names (IANA, ``zoneinfo``):

- ``once``: at one local date and time (``2026-12-15T02:00``);
- ``daily``: every day at a local time (``02:00`` or ``02:00:30``);
- ``weekly``: on some days of the week (0 Monday .. 6 Sunday) at a local time.

A run starts at its *slot* and must be done by the end of its *window*
(``slot + window``): wake-ups it sends expire then at the latest.

Daylight saving time, decided here once: a local time that does not exist
(the spring gap) runs at the same wall-clock distance after the gap's start,
as ``zoneinfo`` reads it with ``fold=0`` (02:30 in a 02:00-03:00 gap runs at
03:30 of the new offset, an hour after 01:30); a local time that happens twice
(the autumn overlap) runs once, at its first occurrence. Either way there is
exactly one slot per scheduled day.

Missed runs (the server was down at a slot): the newest slot whose window is
still open runs late, once; every older one is recorded ``missed`` (``due``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from epns.errors import BadRequest

__all__ = [
    "DAY_NAMES",
    "MAX_MISSED",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "Clock",
    "Due",
    "InvalidSchedule",
    "Schedule",
    "describe",
    "due",
    "local_text",
    "next_slot",
    "parse_schedule",
    "slots_after",
    "window_end",
]

Kind = Literal["once", "daily", "weekly"]
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# A window shorter than a minute leaves no time to wake and sync a machine;
# longer than a week overlaps the next weekly run.
MIN_WINDOW = 60.0
MAX_WINDOW = 7 * 86400.0
# Missed slots recorded after a long outage: the newest ones (a daily
# campaign down for a year is not 365 rows).
MAX_MISSED = 20
# How far ahead a slot is looked for: a weekly schedule has one within 8
# days; a DST gap cannot push one past the next day.
_SEARCH_DAYS = 9
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class InvalidSchedule(BadRequest):
    """A schedule, time zone or window that cannot be used; says which field."""

    status = 422
    code = "invalid_schedule"


class Clock(Protocol):
    """Where the scheduler reads the time (UNIX seconds): the system clock in
    the server, a clock a test moves by hand in the tests."""

    def now(self) -> float:
        """The current time."""
        ...


@dataclass(frozen=True)
class Schedule:
    """A checked schedule (``parse_schedule`` makes them)."""

    kind: Kind
    # Local wall-clock time of day (daily, weekly) or date and time (once).
    at: str
    timezone: str
    window: float
    days: tuple[int, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        """The time zone."""
        return ZoneInfo(self.timezone)

    def as_dict(self) -> dict[str, object]:
        """The JSON form kept in the database and shown by the API."""
        return {"kind": self.kind, "at": self.at, "timezone": self.timezone,
                "window": self.window, "days": list(self.days)}


def parse_schedule(kind: str, at: str, timezone: str, window: float,
                   days: Sequence[int] = ()) -> Schedule:
    """A Schedule, or InvalidSchedule naming the field that is wrong."""
    if kind not in ("once", "daily", "weekly"):
        raise InvalidSchedule(f"schedule.kind must be once, daily or weekly, not {kind!r}")
    try:
        if timezone not in _zones():
            raise ZoneInfoNotFoundError(timezone)
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory of the database ("America") is no zone either.
        raise InvalidSchedule(f"schedule.timezone {timezone!r} is not an IANA time zone "
                              "(e.g. Europe/Paris, America/New_York, UTC)",
                              code="invalid_timezone") from None
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise InvalidSchedule(f"schedule.window must be {MIN_WINDOW:.0f} to "
                              f"{MAX_WINDOW:.0f} seconds, not {window:g}")
    if kind == "once":
        _local_datetime(at)
        if days:
            raise InvalidSchedule("schedule.days is for weekly schedules only")
        return Schedule("once", at, timezone, float(window))
    _local_time(at)
    if kind == "daily":
        if days:
            raise InvalidSchedule("schedule.days is for weekly schedules only")
        return Schedule("daily", at, timezone, float(window))
    chosen = tuple(sorted(set(days)))
    if not chosen or any(day not in range(7) for day in chosen):
        raise InvalidSchedule("schedule.days: one or more of 0 (Monday) to 6 (Sunday)")
    return Schedule("weekly", at, timezone, float(window), chosen)


@functools.cache
def _zones() -> frozenset[str]:
    """The IANA names the system's time zone database has (read once)."""
    return frozenset(available_timezones())


def _local_time(text: str) -> time:
    match = _TIME.match(text)
    if match is None:
        raise InvalidSchedule(f"schedule.at {text!r} is not a time of day HH:MM or HH:MM:SS")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def _local_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSchedule(f"schedule.at {text!r} is not a local date and time "
                              "YYYY-MM-DDTHH:MM[:SS]") from None
    if value.tzinfo is not None:
        raise InvalidSchedule("schedule.at of a once schedule is local time in "
                              "schedule.timezone: leave the offset out")
    if not 2000 <= value.year <= 2200:
        raise InvalidSchedule(f"schedule.at {text!r}: the year must be 2000 to 2200")
    return value


def _instant(day: date, at: time, zone: ZoneInfo) -> float:
    """The UNIX time of a local date and time. fold=0 takes the first of two
    in an overlap, and moves a time in a gap forward by the gap's length: the
    module's DST rule."""
    return datetime.combine(day, at, tzinfo=zone).timestamp()


def slots_after(schedule: Schedule, after: float, count: int) -> list[float]:
    """Up to ``count`` slots strictly after ``after``, in order."""
    zone = schedule.zone
    if schedule.kind == "once":
        slot = _local_datetime(schedule.at).replace(tzinfo=zone).timestamp()
        return [slot] if slot > after and count > 0 else []
    at = _local_time(schedule.at)
    # A day before: a slot late on the previous local day can be after ``after``.
    day = datetime.fromtimestamp(after, zone).date() - timedelta(days=1)
    found: list[float] = []
    for _ in range(count * 7 + _SEARCH_DAYS):
        if len(found) >= count:
            break
        if schedule.kind == "daily" or day.weekday() in schedule.days:
            slot = _instant(day, at, zone)
            if slot > after and (not found or slot > found[-1]):
                found.append(slot)
        day += timedelta(days=1)
    return found


def next_slot(schedule: Schedule, after: float) -> float | None:
    """The first slot strictly after ``after``; None when a once schedule has passed."""
    found = slots_after(schedule, after, 1)
    return found[0] if found else None


@dataclass(frozen=True)
class Due:
    """What the scheduler should do about the slots in (since, now]."""

    # The slot to run now (on time or late, inside its window), if any.
    run: float | None
    # Older slots whose windows closed unrun, oldest first (at most MAX_MISSED).
    missed: tuple[float, ...]
    # How many missed slots were left out of ``missed`` (beyond MAX_MISSED).
    missed_more: int
    # The next slot after ``now``, to wake the scheduler for.
    next: float | None


def due(schedule: Schedule, since: float, now: float) -> Due:
    """The slots in (``since``, ``now``]: the newest runs if its window is still
    open; the others (and it, if closed) are missed. ``since`` is when the
    scheduler last looked, so each slot is handed out once."""
    passed: list[float] = []
    cursor = since
    # Bounded: a schedule checked after years of downtime still ends.
    while True:
        batch = [slot for slot in slots_after(schedule, cursor, 64) if slot <= now]
        passed.extend(batch)
        if len(batch) < 64:
            break
        cursor = batch[-1]
        if len(passed) > 4096:
            passed = passed[-(MAX_MISSED + 1):]
    run = passed[-1] if passed and passed[-1] + schedule.window > now else None
    missed = passed[:-1] if run is not None else passed
    kept = tuple(missed[-MAX_MISSED:])
    return Due(run, kept, len(missed) - len(kept), next_slot(schedule, now))


def window_end(schedule: Schedule, slot: float) -> float:
    """When a run started for ``slot`` must be done."""
    return slot + schedule.window


def describe(schedule: Schedule) -> str:
    """A line for people: ``every Tue, Thu at 02:00 (Europe/Paris), 2 h window``."""
    hours = schedule.window / 3600
    window = f"{hours:g} h" if hours >= 1 else f"{schedule.window / 60:g} min"
    zone = f"({schedule.timezone})"
    if schedule.kind == "once":
        when = f"once at {schedule.at.replace('T', ' ')} {zone}"
    elif schedule.kind == "daily":
        when = f"every day at {schedule.at} {zone}"
    else:
        names = ", ".join(DAY_NAMES[day] for day in schedule.days)
        when = f"every {names} at {schedule.at} {zone}"
    return f"{when}, {window} window"


def local_text(instant: float, timezone: str) -> str:
    """``instant`` as local ISO time with its offset, for previews."""
    return datetime.fromtimestamp(instant, ZoneInfo(timezone)).isoformat(timespec="seconds")

