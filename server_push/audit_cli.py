"""``epns-server audit``: the audit log from the command line, with the API's
filters (``GET /api/v1/audit``, by the same queries): a table, JSON, or the
same CSV as the console's "Download CSV".

    epns-server audit [--actor A] [--action X] [--target T] [--since TIME] [--until TIME]
                      [--oldest-first] [--limit N] [--offset N] [--json | --csv]

TIME is UNIX seconds or an ISO 8601 date or time (``2026-12-08``,
``2026-12-08T02:00:00Z``; without a zone, UTC).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from epns.errors import ConfigError
from epns.server_config import ServerSettings
from server_push import services as services_module
from server_push.store import audit_log
from server_push.store.audit_log import AuditFilter

DEFAULT_LIMIT = 50


def register(sub: Any) -> None:
    """Add ``audit`` to ``epns-server``'s subparsers."""
    parser = sub.add_parser("audit", help="the audit log: filtered, a page, or CSV")
    parser.add_argument("--actor", action="append",
                        help="who did it (user:NAME, token:NAME, cli; repeatable: any of them)")
    parser.add_argument("--action", action="append",
                        help="what was done (agent_revoke, wakeup, ...; repeatable)")
    parser.add_argument("--target", action="append", help="an agent among its targets "
                                                          "(repeatable)")
    parser.add_argument("--since", type=when, metavar="TIME", help="at or after this")
    parser.add_argument("--until", type=when, metavar="TIME", help="before this")
    parser.add_argument("--oldest-first", action="store_true", help="oldest entries first")
    parser.add_argument("--limit", type=_count, default=None,
                        help=f"entries (default {DEFAULT_LIMIT}; with --csv every one; 0: all)")
    parser.add_argument("--offset", type=_count, default=0, help="entries to skip")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="JSON instead of a table")
    shape.add_argument("--csv", action="store_true", help="CSV, as the API's format=csv")
    parser.set_defaults(run=_run)


def when(text: str) -> float:
    """UNIX seconds from UNIX seconds or an ISO 8601 date or time (UTC unless
    it names a zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no time: give UNIX seconds or ISO 8601 (2026-12-08T02:00:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _count(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number, 0 or more")
    return value


def _run(settings: ServerSettings, args: argparse.Namespace) -> None:
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise ConfigError("--until must be after --since")
    sys.stdout.write(asyncio.run(_read(settings, args)))
    sys.stdout.flush()


async def _read(settings: ServerSettings, args: argparse.Namespace) -> str:
    services = await services_module.build(settings)
    try:
        return await entries_text(services.sessions, args)
    finally:
        await services.stop()


async def entries_text(sessions: async_sessionmaker[AsyncSession],
                       args: argparse.Namespace) -> str:
    """The entries ``args`` ask for, as a table with the count under it, JSON or CSV."""
    wanted = AuditFilter(tuple(args.actor or ()), tuple(args.action or ()),
                         tuple(args.target or ()), args.since, args.until)
    limit = args.limit if args.limit is not None else (0 if args.csv else DEFAULT_LIMIT)
    async with sessions() as session:
        dialect = session.get_bind().dialect.name
        total = await session.scalar(audit_log.count_query(wanted, dialect)) or 0
        rows = (await session.scalars(audit_log.page_query(
            wanted, dialect, newest_first=not args.oldest_first, limit=limit or None,
            offset=args.offset))).all()
    entries = [audit_log.as_dict(row) for row in rows]
    if args.csv:
        return audit_log.as_csv(entries)
    if args.json:
        return json.dumps({"total": total, "entries": entries}, indent=2) + "\n"
    table = [("AT", "ACTOR", "ACTION", "TARGETS", "OUTCOME")] + [
        (datetime.fromtimestamp(e["at"], UTC).strftime("%Y-%m-%d %H:%M:%SZ"), e["actor"],
         e["action"], ",".join(map(str, e["targets"]))[:60] or "-", e["outcome"][:80])
        for e in entries]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:4], widths,
                                                                    strict=True)), row[4]])
             .rstrip() for row in table]
    shown = (f"{args.offset + 1}-{args.offset + len(entries)}" if entries else "none")
    return "\n".join(lines) + f"\n{shown} of {total}\n"
