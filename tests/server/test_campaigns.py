"""Wake campaigns end to end: a real broker, server and agents (docs/campaigns.md).

One stack for the module, with a cap small enough to pace (2 sends per 2 s)
and a scheduler that looks every 0.3 s. The calendar itself (DST, missed
slots) is proven by the pure tests in tests/epns/test_campaign_schedule.py;
here the scheduled slot is a few seconds ahead of the real clock.

SAFETY: the campaign's Wake-on-LAN goes through an online relay agent whose
destinations are overridden with ``wol_addresses = ["127.0.0.1"]`` and a UDP
port this test listens on; the server's own addresses on the settings page
stay empty, and the test server is fenced to 127.0.0.0/8 anyway.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from epns.wol import magic_packet
from tests.server.conftest import Stack, _make_stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture
from tests.support.processes import wait_until

CAP, INTERVAL = 2, 2.0
ZONE = "Europe/Paris"
GROUP = "floor-2"
AWAKE = ("pc-1", "pc-2", "pc-3", "pc-4", "pc-5")
SLEEPER = "pc-sleeper"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = _make_stack(tmp_path_factory.mktemp("campaigns"), "epns", {
        "campaigns__cap": str(CAP), "campaigns__cap_interval": str(INTERVAL),
        "campaigns__tick": "0.3", "campaigns__lease": "3"})
    yield made
    made.stop()


@pytest.fixture(scope="module")
def fleet(stack: Stack) -> Stack:
    """Six agents of group floor-2, online."""
    for agent_id in (*AWAKE, SLEEPER):
        stack.start_agent(agent_id, groups=(GROUP,))
    for agent_id in (*AWAKE, SLEEPER):
        stack.wait_agent(agent_id, "online")
    return stack


def _call(stack: Stack, method: str, path: str, status: int, **kwargs: Any) -> Any:
    with stack.api() as api:
        answer = api.request(method, path, **kwargs)
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content and "json" in answer.headers["content-type"] else (
        answer.text)


def _campaign(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "floor-2 maintenance", "targets": {"groups": [GROUP]},
        "schedule": {"kind": "weekly", "at": "02:00", "timezone": ZONE, "window": 7200,
                     "days": [1]}}
    body.update(changes)
    return body


def test_bad_schedules_are_422s_that_name_the_field(stack: Stack) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"schedule": {"kind": "weekly", "at": "02:00", "timezone": "Mars/Olympus",
                       "days": [1]}}, "invalid_timezone", "timezone"),
        ({"schedule": {"kind": "daily", "at": "25:00", "timezone": ZONE}},
         "invalid_schedule", "HH:MM"),
        ({"schedule": {"kind": "weekly", "at": "02:00", "timezone": ZONE}},
         "invalid_schedule", "days"),
        ({"schedule": {"kind": "once", "at": "2026-02-30T02:00", "timezone": ZONE}},
         "invalid_schedule", "date"),
        ({"targets": {}}, "no_targets", "group or agent"),
        ({"options": {"wol": True, "wol_addresses": ["not-an-address"]}},
         "invalid_campaign", "wol_addresses"),
    ]
    for change, code, words in cases:
        error = _call(stack, "POST", "/api/v1/campaigns", 422, json=_campaign(**change))["error"]
        assert error["code"] == code, error
        assert words in error["message"], error
    # A field the schema does not know, and a window out of range: the validator's 422.
    _call(stack, "POST", "/api/v1/campaigns", 422, json=_campaign(colour="red"))
    _call(stack, "POST", "/api/v1/campaigns", 422, json=_campaign(schedule={
        "kind": "daily", "at": "02:00", "timezone": ZONE, "window": 5}))
    assert _call(stack, "GET", "/api/v1/campaigns", 200) == []

    shown = _call(stack, "GET", "/api/v1/campaigns/preview", 200, params={
        "kind": "weekly", "at": "02:00", "timezone": ZONE, "window": 7200, "days": [1, 3]})
    assert shown["description"] == "every Tue, Thu at 02:00 (Europe/Paris), 2 h window"
    local = [datetime.fromisoformat(text) for text in shown["next_runs_local"]]
    assert [d.strftime("%a %H:%M") for d in local[:2]] in (
        ["Tue 02:00", "Thu 02:00"], ["Thu 02:00", "Tue 02:00"])
    assert shown["next_runs"] == [d.timestamp() for d in local]
    error = _call(stack, "GET", "/api/v1/campaigns/preview", 422, params={
        "kind": "daily", "at": "02:00", "timezone": "Nowhere/Else"})["error"]
    assert error["code"] == "invalid_timezone"


def _report(stack: Stack, run_id: str) -> dict[str, Any]:
    report: dict[str, Any] = _call(stack, "GET", f"/api/v1/campaign-runs/{run_id}", 200)
    return report


def _runs(stack: Stack, campaign_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = _call(stack, "GET", f"/api/v1/campaigns/{campaign_id}/runs",
                                       200)
    return runs


@pytest.mark.timeout(240)
def test_a_recurring_campaign_wakes_a_group_paced_by_the_cap_and_survives_a_restart(
        fleet: Stack) -> None:
    stack = fleet
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        _run_the_campaign(stack, listener, port)
    finally:
        listener.close()


def _run_the_campaign(stack: Stack, listener: socket.socket, port: int) -> None:
    # The sleeper goes to sleep: its agent stops, the broker publishes its will.
    sleeper = next(a for a in reversed(stack.agents) if a.config.stem == SLEEPER)
    sleeper.stop()
    stack.wait_agent(SLEEPER, "offline")
    mac = next(i["mac"] for i in _call(stack, "GET", f"/api/v1/agents/{SLEEPER}", 200)[
        "interfaces"] if i.get("mac") and not i["address"].startswith("127."))

    # Weekly, on today's weekday in Paris, a few seconds from now.
    zone = ZoneInfo(ZONE)
    at = (datetime.now(zone) + timedelta(seconds=4)).replace(microsecond=0)
    created = _call(stack, "POST", "/api/v1/campaigns", 201, json=_campaign(
        schedule={"kind": "weekly", "at": at.strftime("%H:%M:%S"), "timezone": ZONE,
                  "window": 120, "days": [at.weekday()]},
        options={"wol": True, "settle": 60, "wol_addresses": ["127.0.0.1"],
                 "wol_ports": [port]}))
    assert created["next_run_at"] == at.timestamp()
    assert created["next_runs"][1] - created["next_runs"][0] in (
        7 * 86400.0, 7 * 86400.0 - 3600.0, 7 * 86400.0 + 3600.0)  # a DST change between

    def run_started() -> bool:
        return any(r["state"] in ("running", "done") for r in _runs(stack, created["id"]))

    wait_until(run_started, "the scheduled run to start", timeout=20)
    [run] = _runs(stack, created["id"])
    assert run["trigger"] == "schedule"
    assert run["slot"] == at.timestamp()
    assert at.timestamp() <= run["started_at"] < at.timestamp() + 5
    assert run["window_end"] == at.timestamp() + 120

    # Paced: while targets wait, the report shows the cap and the queue.
    report = _report(stack, run["id"])
    assert report["counts"]["targets"] == len(AWAKE) + 1
    seen_queue = report.get("pacing", {})
    assert seen_queue["cap"] == f"{CAP}/{INTERVAL:g} s"
    assert seen_queue["queued"] >= 1, report
    assert seen_queue["eta"] >= time.time() - 1

    # The sleeper is offline: Wake-on-LAN through a relay, to 127.0.0.1 only.
    packets: list[bytes] = []

    def magic_arrived() -> bool:
        try:
            packets.append(listener.recv(4096))
        except TimeoutError:
            return False
        return True

    wait_until(magic_arrived, "the campaign's magic packet", timeout=20)
    assert packets[0] == magic_packet(mac)

    # Restart the server mid-run: some targets sent, some still queued.
    before = _report(stack, run["id"])
    assert before["state"] == "running"
    stack.restart_server()
    # The machine boots: its agent starts, comes online, and gets its wake-up.
    sleeper.stop()
    stack.start_agent(SLEEPER, groups=(GROUP,), create=False)

    def done() -> bool:
        return bool(_report(stack, run["id"])["state"] == "done")

    wait_until(done, "the run to end", timeout=90)
    report = _report(stack, run["id"])
    counts = report["counts"]
    assert counts["targets"] == counts["synced"] == len(AWAKE) + 1, report
    assert counts["wol_sent"] == 1
    assert counts["woke"] == 1
    assert counts["not_sent"] == counts["expired"] == 0
    by_agent = {t["agent_id"]: t for t in report["targets"]}
    assert set(by_agent) == {*AWAKE, SLEEPER}
    assert all(t["outcome"] == "synced" for t in by_agent.values())
    assert by_agent[SLEEPER]["presence_at_start"] == "offline"
    sleeper_row = by_agent[SLEEPER]
    assert sleeper_row["wol_sent_at"] < sleeper_row["woke_at"] <= sleeper_row["wake_sent_at"]
    assert sleeper_row["wake_sent_at"] < sleeper_row["synced_at"]
    assert by_agent["pc-1"]["wol_sent_at"] is None

    # The cap held: no more than CAP sends (wake-ups and the WoL) in any interval.
    sends = sorted([t["wake_sent_at"] for t in by_agent.values()]
                   + [sleeper_row["wol_sent_at"]])
    for t in sends:
        assert sum(1 for s in sends if t - INTERVAL < s <= t) <= CAP, sends
    # Paced, not dropped: each agent got exactly one wake-up from the campaign,
    # across the restart (a batch cut short is resent under its key).
    wakeups = _call(stack, "GET", "/api/v1/wakeups", 200,
                    params={"requested_by": f"campaign:{created['id']}", "limit": 100})
    woken = sorted(agent for wakeup in wakeups for agent in wakeup["target"])
    assert woken == sorted([*AWAKE, SLEEPER])
    assert len({t["wakeup_id"] for t in by_agent.values()}) >= (len(AWAKE) + 1) / CAP

    # The report as CSV, and the audit trail of the run.
    text = _call(stack, "GET", f"/api/v1/campaign-runs/{run['id']}", 200,
                 params={"format": "csv"})
    lines = text.strip().splitlines()
    assert lines[0].startswith("agent_id,outcome,")
    assert sorted(line.split(",")[:2] for line in lines[1:]) == sorted(
        [agent, "synced"] for agent in (*AWAKE, SLEEPER))
    audit = _call(stack, "GET", "/api/v1/audit", 200, params={"action": "campaign_run"})
    [entry] = [e for e in audit if e["ref"] == run["id"]]
    assert entry["outcome"].startswith(f"done: floor-2 maintenance: synced {len(AWAKE) + 1}/")

    # Next week's slot is next; a second run by hand goes now.
    shown = _call(stack, "GET", f"/api/v1/campaigns/{created['id']}", 200)
    assert shown["next_run_at"] == created["next_runs"][1]
    manual = _call(stack, "POST", f"/api/v1/campaigns/{created['id']}/run", 202)
    assert manual["trigger"] == "manual"
    _call(stack, "POST", f"/api/v1/campaigns/{created['id']}/run", 409)
    metrics = _call(stack, "GET", "/api/v1/metrics", 200)
    assert "epns_server_campaign_sends_total{kind=\"wake\"}" in metrics
    wait_until(lambda: _report(stack, manual["id"])["state"] == "done", "the manual run",
               timeout=60)
    assert _report(stack, manual["id"])["counts"]["synced"] == len(AWAKE) + 1
    assert not [line for line in stack.server.lines if "campaign_round_failed" in line]
    _call(stack, "DELETE", f"/api/v1/campaigns/{created['id']}", 204)
    assert _call(stack, "GET", "/api/v1/campaigns", 200) == []
    assert _report(stack, run["id"])["state"] == "done"


@pytest.mark.timeout(180)
def test_the_campaigns_page_creates_runs_and_reports(
        fleet: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    tab = console(fleet)
    tab.login()
    page = tab.page
    page.goto(f"{tab.url}/console/campaigns")
    page.fill("#name", "nightly floor-2")
    page.fill("#groups", GROUP)
    page.select_option("#kind", "daily")
    page.fill("#at", "02:00")
    # A time zone that does not exist: the preview says so before saving.
    page.fill("#timezone", "Europe/Atlantis")
    expect(page.locator("#preview")).to_contain_text("is not an IANA time zone")
    page.fill("#timezone", ZONE)
    expect(page.locator("#preview")).to_contain_text(
        "every day at 02:00 (Europe/Paris), 2 h window. Next runs: ")
    page.click("#save")
    row = page.locator("tr", has_text="nightly floor-2")
    expect(row.locator("td.next-run")).to_contain_text("T02:00:00")
    expect(row.locator("td.latest-run")).to_have_text("none yet")

    # Run now: six agents at 2 per 2 s, so the page shows the pacing.
    row.locator("button.run-now").click()
    expect(page.locator("#pacing")).to_contain_text(
        re.compile(rf"paced: {CAP}/{INTERVAL:g} s, \d+ queued, ETA "))
    expect(row.locator("td.latest-run")).to_contain_text("running: ")
    row.locator("button.show-runs").click()
    expect(page.locator("#runs tr")).to_have_count(1)
    expect(page.locator("#runs td.run-state")).to_have_text(re.compile("running|done"))
    row.locator("td.latest-run a").click()
    page.wait_for_url(re.compile(r"/console/campaign-runs/[0-9a-f]+$"))
    expect(page.locator("#run-state")).to_have_text("done", timeout=60_000)
    expect(page.locator("#run-counts")).to_contain_text(f"{len(AWAKE) + 1}/{len(AWAKE) + 1} synced")
    outcomes = page.locator("#run-targets td.outcome")
    expect(outcomes).to_have_count(len(AWAKE) + 1)
    expect(outcomes).to_have_text(["synced"] * (len(AWAKE) + 1))
    expect(page.locator("#csv")).to_have_attribute("href", re.compile(r"format=csv$"))
    assert tab.errors == []


@pytest.mark.timeout(120)
def test_the_cli_creates_lists_runs_and_reports(fleet: Stack) -> None:
    cli = fleet.server.cli
    made = cli("campaign", "create", "cli weekly", "--group", GROUP, "--kind", "weekly",
               "--at", "03:15", "--days", "tue,thu", "--timezone", ZONE, "--window", "3600")
    assert "every Tue, Thu at 03:15 (Europe/Paris), 1 h window" in made
    campaign_id = made.split()[1].rstrip(":")
    listed = json.loads(cli("campaign", "list", "--json"))
    [mine] = [c for c in listed if c["id"] == campaign_id]
    assert mine["targets"] == {"groups": [GROUP], "agents": []}
    assert "cli weekly" in cli("campaign", "list")
    with pytest.raises(AssertionError, match="not an IANA time zone"):
        cli("campaign", "create", "bad", "--group", GROUP, "--at", "02:00", "--days", "mon",
            "--timezone", "Mars/Olympus")
    # The command only writes the run; the running server's scheduler sends it.
    started = cli("campaign", "run", campaign_id)
    run_id = started.split()[1]
    wait_until(lambda: _report(fleet, run_id)["state"] == "done", "the CLI's run", timeout=60)
    report = cli("campaign", "report", run_id)
    assert f"run {run_id} of cli weekly: done (manual" in report
    assert f"synced {len(AWAKE) + 1}" in report
    lines = cli("campaign", "report", run_id, "--csv").strip().splitlines()
    assert len(lines) == len(AWAKE) + 2
    audit = _call(fleet, "GET", "/api/v1/audit", 200, params={"actor": "cli"})
    assert {"campaign_create", "campaign_run"} <= {e["action"] for e in audit}
