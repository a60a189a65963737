"""``epns-server agent list`` and ``epns-server token list | revoke``: the fleet
and the API tokens from the command line, read from the server's database.

    epns-server agent list [--presence P] [--group G] [--route R] [--version V]
                           [--q TEXT] [--last-seen-before T] [--last-seen-after T]
                           [--expiring-within S] [--sort FIELDS] [--limit N] [--offset N]
                           [--json]
    epns-server token list [--json] | revoke ID

The filters and sort are the API's (``GET /api/v1/agents``), by the same
code. The command has no broker link of its own: presence is what the rows
say (``online`` until ``presence.stale_after`` without news), as the running
server shows it while its broker link is up.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from server_push.fleet.agent_query import PRESENCES, SORT_FIELDS, AgentFilter, parse_sort
from server_push.services import Services

DEFAULT_LIMIT = 50


def add_list_options(parser: argparse.ArgumentParser) -> None:
    """The filters, sort and page of ``agent list`` (``--group`` is the
    parser's own, shared with ``agent create``)."""
    parser.add_argument("--presence", action="append", choices=PRESENCES,
                        help="list: this presence (repeatable: any of them)")
    parser.add_argument("--route", action="append", help="list: this route (repeatable)")
    parser.add_argument("--version", action="append", dest="agent_version",
                        help="list: this agent version (repeatable)")
    parser.add_argument("--q", help="list: text in the id or host name")
    parser.add_argument("--last-seen-before", type=float, metavar="UNIX_TIME")
    parser.add_argument("--last-seen-after", type=float, metavar="UNIX_TIME")
    parser.add_argument("--expiring-within", type=float, metavar="SECONDS",
                        help="list: identities expiring within this (or expired)")
    parser.add_argument("--retired", choices=("exclude", "include", "only"), default="exclude",
                        help="list: retired agents left out (default), counted in, or alone")
    parser.add_argument("--sort", default="id",
                        help=f"list: fields among {', '.join(SORT_FIELDS)}, comma-separated, "
                             "'-' for descending, written --sort=-last_seen (default id)")
    parser.add_argument("--limit", type=_count, default=DEFAULT_LIMIT,
                        help=f"list: rows per page (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("--offset", type=_count, default=0, help="list: rows to skip")
    parser.add_argument("--json", action="store_true", help="list: JSON instead of a table")


def _count(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows, 0 or more")
    return value


async def list_agents(services: Services, args: argparse.Namespace) -> str:
    """The page ``args`` ask for: a table with the totals under it, or JSON."""
    keys = parse_sort(args.sort)
    wanted = AgentFilter(
        q=args.q, presence=tuple(args.presence or ()), groups=tuple(args.group or ()),
        routes=tuple(args.route or ()), versions=tuple(args.agent_version or ()),
        last_seen_before=args.last_seen_before, last_seen_after=args.last_seen_after,
        expiring_within=args.expiring_within, retired=args.retired)
    now = time.time()
    # No broker link here: judge presence by the rows alone (module docstring).
    services.registry.link_up = True
    views = await services.registry.find(wanted, keys, now, limit=args.limit or None,
                                         offset=args.offset)
    counts = await services.registry.count(wanted, now)
    if args.json:
        return json.dumps({"agents": [view.to_dict() for view in views], **counts}, indent=2)
    rows = [(v.id, v.presence, _age(v.last_seen, now), v.route or "-", v.version or "-",
             ",".join(v.groups) or "-", v.hostname or "-") for v in views]
    table = _table(("ID", "PRESENCE", "LAST SEEN", "ROUTE", "VERSION", "GROUPS", "HOST"), rows)
    shown = (f"{args.offset + 1}-{args.offset + len(views)}" if views else "none")
    by_presence = ", ".join(f"{name} {counts['presence'][name]}" for name in PRESENCES)
    return f"{table}\n{shown} of {counts['total']} ({by_presence})"


async def list_tokens(services: Services, as_json: bool) -> str:
    """The API tokens, without their secrets."""
    tokens = await services.credentials.tokens()
    if as_json:
        return json.dumps(tokens, indent=2)
    now = time.time()
    rows = [(t["id"], t["name"], _when(t["created_at"]), t["created_by"],
             _age(t["last_used"], now),
             "never" if t["expires_at"] is None else _when(t["expires_at"]), t["state"])
            for t in tokens]
    return _table(("ID", "NAME", "CREATED", "BY", "LAST USED", "EXPIRES", "STATE"), rows)


async def revoke_token(services: Services, token_id: str) -> str:
    """Revoke one API token; NotFound when there is no such token, Conflict
    when it is revoked already."""
    await services.credentials.revoke_token(token_id, "cli")
    return f"API token {token_id} revoked: requests with it are refused from now on"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in
                               zip(row, widths, strict=True)).rstrip()
                     for row in (header, *rows))


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(at: float | None, now: float) -> str:
    """How long ago, in the largest whole unit: '42 s ago', '3 h ago'; '-' for never."""
    if at is None:
        return "-"
    seconds = max(0.0, now - at)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"

