"""``epns-server campaign``: wake campaigns from the command line, on the
server's database (docs/campaigns.md), by the same service as the API.

    epns-server campaign list [--json]
    epns-server campaign create NAME [--group G ...] [--agent ID ...] --at HH:MM
                                [--kind weekly|daily|once] [--days tue,thu]
                                [--timezone ZONE] [--window S] [--wol] [--settle S] [--paused]
    epns-server campaign run ID          a run now; the running server's scheduler sends it
    epns-server campaign report RUN_ID [--json | --csv]

The command sends nothing itself: a run it starts is a row that the running
server's scheduler picks up at its next round (``campaigns.tick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from epns.campaign_schedule import DAY_NAMES, parse_schedule
from epns.errors import ConfigError
from epns.server_config import ServerSettings
from server_push import services as services_module
from server_push.fleet.campaigns import CampaignSpec, report_csv

ACTOR = "cli"


def register(sub: Any) -> None:
    """Add ``campaign`` to ``epns-server``'s subparsers."""
    parser = sub.add_parser("campaign", help="wake campaigns: list, create, run, report")
    parser.add_argument("action", choices=("list", "create", "run", "report"))
    parser.add_argument("name", nargs="?",
                        help="create: its name; run: the campaign id; report: the run id")
    parser.add_argument("--group", action="append", default=[], help="create: a target group "
                                                                    "(repeatable)")
    parser.add_argument("--agent", action="append", default=[], help="create: a target agent "
                                                                    "(repeatable)")
    parser.add_argument("--kind", choices=("weekly", "daily", "once"), default="weekly")
    parser.add_argument("--at", help="create: local HH:MM[:SS], or YYYY-MM-DDTHH:MM for once")
    parser.add_argument("--days", type=_days, default=(),
                        help="create, weekly: days as mon,tue,... or 0-6 (0 Monday)")
    parser.add_argument("--timezone", default="UTC", help="create: IANA zone (default UTC)")
    parser.add_argument("--window", type=float, default=7200.0,
                        help="create: seconds the run may take (default 7200)")
    parser.add_argument("--wol", action="store_true",
                        help="create: Wake-on-LAN first for targets that are not online")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="create: seconds to wait for a WoL target to come online")
    parser.add_argument("--paused", action="store_true", help="create: paused")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="list, report: JSON")
    shape.add_argument("--csv", action="store_true", help="report: the targets as CSV")
    parser.set_defaults(run=_run)


def _days(text: str) -> tuple[int, ...]:
    names = [name.lower() for name in DAY_NAMES]
    days = []
    for item in (part.strip().lower() for part in text.split(",") if part.strip()):
        if item.isdigit() and int(item) < 7:
            days.append(int(item))
        elif item[:3] in names:
            days.append(names.index(item[:3]))
        else:
            raise argparse.ArgumentTypeError(f"{item!r} is no day: mon..sun or 0-6")
    return tuple(days)


def _run(settings: ServerSettings, args: argparse.Namespace) -> None:
    if args.action != "list" and not args.name:
        raise ConfigError(f"campaign {args.action} needs "
                          + ("a name" if args.action == "create" else "an id"))
    if args.action == "create" and not args.at:
        raise ConfigError("campaign create needs --at")
    sys.stdout.write(asyncio.run(_work(settings, args)))
    sys.stdout.flush()


async def _work(settings: ServerSettings, args: argparse.Namespace) -> str:
    services = await services_module.build(settings)
    try:
        campaigns = services.campaigns
        if args.action == "list":
            shown = await campaigns.all()
            return json.dumps(shown, indent=2) + "\n" if args.json else _table(shown)
        if args.action == "create":
            made = await campaigns.create(ACTOR, CampaignSpec(
                name=args.name, groups=tuple(args.group), agents=tuple(args.agent),
                enabled=not args.paused, wol=args.wol, settle=args.settle,
                schedule=parse_schedule(args.kind, args.at, args.timezone, args.window,
                                        args.days)))
            runs = ", ".join(made["next_runs_local"][:3]) or "none"
            return f"campaign {made['id']}: {made['description']}\n  next runs: {runs}\n"
        if args.action == "run":
            run = await campaigns.run_now(args.name, ACTOR)
            return (f"run {run['id']} of {run['campaign']} created; the running server "
                    f"sends it within {settings.campaigns.tick:g} s\n")
        report = await campaigns.report(args.name)
        if args.json:
            return json.dumps(report, indent=2) + "\n"
        if args.csv:
            return report_csv(report["targets"])
        return _report(report)
    finally:
        await services.stop()


def _at(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(shown: list[dict[str, Any]]) -> str:
    if not shown:
        return "no campaigns\n"
    lines = [f"{'ID':32}  {'NAME':24}  {'NEXT RUN':25}  SCHEDULE"]
    for campaign in shown:
        next_run = (campaign["next_runs_local"] or ["-"])[0] if campaign["enabled"] else "paused"
        lines.append(f"{campaign['id']:32}  {campaign['name'][:24]:24}  {next_run:25}  "
                     f"{campaign['description']}")
    return "\n".join(lines) + "\n"


def _report(report: dict[str, Any]) -> str:
    counts = report["counts"]
    lines = [f"run {report['id']} of {report['campaign']}: {report['state']} "
             f"({report['trigger']}, window ends {_at(report['window_end'])})",
             "  " + ", ".join(f"{key} {value}" for key, value in counts.items())]
    if report.get("pacing"):
        pacing = report["pacing"]
        lines.append(f"  paced: {pacing['cap']}, {pacing['queued']} queued")
    lines += [f"  {t['agent_id']:24} {t['outcome']:12} synced {_at(t['synced_at'])}"
              for t in report["targets"]]
    return "\n".join(lines) + "\n"
