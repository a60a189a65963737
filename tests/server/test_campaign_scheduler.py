"""The campaign scheduler on a clock the test moves, over a real database
(SQLite, and PostgreSQL where its binaries are installed): which slots run,
late or on time, which are missed while the server was down, across a DST
change; and a run claimed by one of two replicas at a time (the lease).

The campaigns here target a group no agent is in, so a run that starts ends
at once ("no agent matched"): what is tested is the scheduler, not the
sending (tests/server/test_campaigns.py sends, with real agents)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from epns.campaign_schedule import parse_schedule
from epns.server_config import CampaignSettings, PresenceSettings
from server_push.fleet.bus import Bus
from server_push.fleet.campaigns import Campaigns, CampaignSpec
from server_push.fleet.registry import Registry
from server_push.link.metrics import CampaignCounts
from server_push.store import db
from server_push.store.models import CampaignRun, CampaignTarget, WakeTarget, Wakeup, WolRequest
from tests.support.postgres import available, postgres_cluster

PARIS = ZoneInfo("Europe/Paris")
SETTINGS = CampaignSettings(cap=10, cap_interval=1.0, tick=1.0, lease=30.0)


class HandClock:
    """A clock this test moves."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


def paris(*parts: int) -> float:
    year, month, day, hour, minute = parts
    return datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'campaigns.db'}"
        return
    if not available():
        pytest.skip("PostgreSQL's server binaries are not installed")
    with postgres_cluster() as url:
        yield url


def _campaigns(sessions: Any, clock: HandClock, replica: str) -> Campaigns:
    bus = Bus()
    # Sending is never reached: no agent is in the target group.
    return Campaigns(sessions, wakeups=cast(Any, None), wol=cast(Any, None),
                     registry=Registry(sessions, bus, PresenceSettings()), bus=bus,
                     settings=SETTINGS, max_ttl=86400.0, counts=CampaignCounts(), clock=clock,
                     replica=replica)


async def _open(url: str) -> AsyncIterator[Any]:
    engine = db.create_engine(url)
    await db.migrate(engine)
    try:
        yield db.sessions(engine)
    finally:
        await engine.dispose()


async def _runs(sessions: Any) -> list[CampaignRun]:
    async with sessions() as session:
        return list((await session.scalars(select(CampaignRun).order_by(CampaignRun.slot))).all())


def test_slots_missed_while_down_and_a_late_run_inside_its_window(database: str) -> None:
    async def scenario() -> None:
        async for sessions in _open(database):
            clock = HandClock(paris(2026, 3, 23, 12, 0))  # a Monday
            campaigns = _campaigns(sessions, clock, "a")
            created = await campaigns.create("admin", CampaignSpec(
                name="nightly", groups=("nobody",),
                schedule=parse_schedule("daily", "02:00", "Europe/Paris", 7200)))
            assert created["next_run_at"] == paris(2026, 3, 24, 2, 0)
            await campaigns.round()
            assert await _runs(sessions) == []

            # Down from Monday noon to Thursday 03:00: Tuesday's and
            # Wednesday's windows closed unrun; Thursday's is still open.
            clock.at = paris(2026, 3, 26, 3, 0)
            await campaigns.round()
            runs = await _runs(sessions)
            assert [(r.slot, r.state) for r in runs] == [
                (paris(2026, 3, 24, 2, 0), "missed"), (paris(2026, 3, 25, 2, 0), "missed"),
                (paris(2026, 3, 26, 2, 0), "done")]
            assert "not running at this time" in runs[0].detail
            assert "started 3600 s late" in runs[2].detail
            assert "no agent matched" in runs[2].detail
            assert runs[2].started_at == clock.at
            # Looked at again: each slot is handed out once.
            await campaigns.round()
            assert len(await _runs(sessions)) == 3

            # On time the next night; then across the spring DST gap (29 March
            # 2026, 02:00 -> 03:00 in Paris): the run is at 03:00 CEST.
            for day in (27, 28):
                clock.at = paris(2026, 3, day, 2, 0) + 0.5
                await campaigns.round()
            clock.at = datetime(2026, 3, 29, 1, 30, tzinfo=PARIS).timestamp() + 3600 + 0.5
            await campaigns.round()
            runs = await _runs(sessions)
            assert [datetime.fromtimestamp(r.slot, PARIS).strftime("%d %H:%M %Z")
                    for r in runs[3:]] == ["27 02:00 CET", "28 02:00 CET", "29 03:00 CEST"]
            assert all(r.state == "done" for r in runs[3:])
            shown = await campaigns.get(created["id"])
            assert shown["next_run_at"] == paris(2026, 3, 30, 2, 0)

            # Paused over two nights: those slots are skipped, not missed.
            spec = CampaignSpec(name="nightly", groups=("nobody",), enabled=False,
                                schedule=parse_schedule("daily", "02:00", "Europe/Paris", 7200))
            await campaigns.update(created["id"], "admin", spec)
            clock.at = paris(2026, 3, 31, 12, 0)
            await campaigns.round()
            await campaigns.update(created["id"], "admin", CampaignSpec(
                name="nightly", groups=("nobody",),
                schedule=parse_schedule("daily", "02:00", "Europe/Paris", 7200)))
            await campaigns.round()
            assert len(await _runs(sessions)) == len(runs)

    asyncio.run(scenario())


def test_one_replica_at_a_time_advances_a_run(database: str) -> None:
    async def scenario() -> None:
        async for sessions in _open(database):
            clock = HandClock(paris(2026, 12, 8, 2, 0))
            first, second = (_campaigns(sessions, clock, name) for name in ("a", "b"))
            created = await first.create("admin", CampaignSpec(
                name="lease", groups=("nobody",),
                schedule=parse_schedule("daily", "02:00", "UTC", 3600)))
            async with sessions() as session, session.begin():
                for index in range(20):
                    session.add(CampaignRun(
                        id=uuid.uuid4().hex, campaign_id=created["id"], trigger="manual",
                        slot=clock.at + index, window_end=clock.at + 3600, state="running",
                        requested_by="test", created_at=clock.at, detail=""))
            # Both replicas race for the same 20 runs: each run goes to one.
            mine, theirs = await asyncio.gather(first._claim(clock.at),
                                                second._claim(clock.at))
            assert set(mine).isdisjoint(theirs)
            assert len(mine) + len(theirs) == 20
            # The holder keeps them; the other replica gets them only once
            # the lease has run out.
            assert sorted(await first._claim(clock.at + 1)) == sorted(mine)
            assert await second._claim(clock.at + 1) == theirs
            later = clock.at + 1 + SETTINGS.lease + 1  # past the lease the last claim renewed
            assert sorted(await second._claim(later)) == sorted([*mine, *theirs])
            assert await first._claim(later + 1) == []

    asyncio.run(scenario())


def test_targets_the_window_ends_on_are_reported_not_sent(database: str) -> None:
    async def scenario() -> None:
        async for sessions in _open(database):
            clock = HandClock(paris(2026, 12, 8, 2, 0))
            campaigns = _campaigns(sessions, clock, "a")
            created = await campaigns.create("admin", CampaignSpec(
                name="short", groups=("nobody",),
                schedule=parse_schedule("daily", "02:00", "UTC", 600)))
            run_id = uuid.uuid4().hex
            async with sessions() as session, session.begin():
                session.add(CampaignRun(
                    id=run_id, campaign_id=created["id"], trigger="manual", slot=clock.at,
                    window_end=clock.at + 600, state="running", requested_by="test",
                    created_at=clock.at, started_at=clock.at, detail=""))
                await session.flush()
                session.add_all([CampaignTarget(run_id=run_id, agent_id=f"pc-{n}",
                                                phase=phase, detail="")
                                 for n, phase in enumerate(("queued", "wake_queued",
                                                            "wol_sent"))])
            # Past the window, what still waited is not_sent, counted and
            # named in the report, and the run ends.
            clock.at += 600
            await campaigns.round()
            report = await campaigns.report(run_id)
            assert report["state"] == "done"
            assert report["counts"]["not_sent"] == report["counts"]["targets"] == 3
            assert {t["outcome"] for t in report["targets"]} == {"not_sent"}
            assert all("window ended" in t["detail"] for t in report["targets"])

    asyncio.run(scenario())


def test_the_cap_counts_ad_hoc_wakeups_and_magic_packets_from_their_rows(database: str) -> None:
    async def scenario() -> None:
        async for sessions in _open(database):
            clock = HandClock(time.time())
            campaigns = _campaigns(sessions, clock, "a")
            async with sessions() as session, session.begin():
                for at, agents in ((clock.at - 0.5, 3), (clock.at - 5.0, 4)):
                    wakeup = Wakeup(id=uuid.uuid4().hex, created_at=at, expires_at=at + 60,
                                    requested_by="token:rmm", target_kind="agents",
                                    target=[f"pc-{n}" for n in range(agents)])
                    session.add(wakeup)
                    await session.flush()
                    session.add_all([WakeTarget(wakeup_id=wakeup.id, agent_id=f"pc-{n}",
                                                requested_at=at, expires_at=at + 60)
                                     for n in range(agents)])
                session.add_all([WolRequest(id=uuid.uuid4().hex[:24], created_at=clock.at - 0.2,
                                            requested_by="user:admin", mac="aa:bb:cc:dd:ee:0f",
                                            sends=[], state="sent", deadline=clock.at + 60)
                                 for _ in range(2)])
            # The interval is 1 s: the wake-up 5 s ago has aged out; 3 wake
            # targets and 2 Wake-on-LAN requests in it are 5 of the 10.
            pacing = await campaigns.pacing()
            assert (pacing.used, pacing.queued, pacing.eta) == (5, 0, None)
            assert pacing.as_dict()["cap"] == "10/1 s"
            # A new campaign server (a restart) reads the same budget.
            assert (await _campaigns(sessions, clock, "b").pacing()).used == 5

    asyncio.run(scenario())
