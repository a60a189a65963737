"""``epns-server enrol-token`` and ``epns-server enrolment``: enrolment tokens
and the enrolments waiting for an admin, from the command line.

    epns-server enrol-token create [--group G] [--ttl S] [--max-uses N | --unlimited]
                                   [--approval] [--agent-id ID]
    epns-server enrol-token list | show ID | revoke ID
    epns-server enrolment list [--state pending] | accept ID | reject ID [--reason TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from epns.errors import NotFound
from epns.server_config import ServerSettings
from server_push import services as services_module
from server_push.fleet import installer
from server_push.fleet.agents import public_url
from server_push.fleet.enrol import DEFAULT_TTL
from server_push.services import Services

Work = Callable[[Services, argparse.Namespace], Awaitable[None]]


def register(sub: Any) -> None:
    """Add the two commands to ``epns-server``'s subparsers."""
    token = sub.add_parser("enrol-token", help="enrolment tokens for epns-agent enrol and "
                                               "the one-line installer")
    token.add_argument("action", choices=("create", "list", "show", "revoke"))
    token.add_argument("token_id", nargs="?", help="show, revoke: the token's id")
    token.add_argument("--group", action="append", help="group (repeatable)")
    token.add_argument("--ttl", type=float, default=DEFAULT_TTL, help="seconds (default a day)")
    token.add_argument("--max-uses", type=int, default=1,
                       help="how many machines may enrol with it (default 1)")
    token.add_argument("--unlimited", action="store_const", const=None, dest="max_uses",
                       help="any number of machines, until it expires or is revoked")
    token.add_argument("--approval", action="store_true",
                       help="each enrolment waits until an admin accepts it")
    token.add_argument("--agent-id", help="the one agent id this token may enrol")
    token.set_defaults(run=_runner({"create": _create, "list": _list_tokens,
                                    "show": _show_token, "revoke": _revoke}))
    enrolment = sub.add_parser("enrolment", help="enrolments: accept or reject pending ones")
    enrolment.add_argument("action", choices=("list", "accept", "reject"))
    enrolment.add_argument("enrolment_id", nargs="?", help="accept, reject: the enrolment's id")
    enrolment.add_argument("--state", choices=("pending", "enrolled", "rejected", "expired"),
                           help="list: only these")
    enrolment.add_argument("--reason", default="rejected by an admin", help="reject: why")
    enrolment.set_defaults(run=_runner({"list": _list_enrolments, "accept": _accept,
                                        "reject": _reject}))


def _runner(actions: dict[str, Work]) -> Callable[[ServerSettings, argparse.Namespace], None]:
    def run(settings: ServerSettings, args: argparse.Namespace) -> None:
        needs_id = {"show", "revoke", "accept", "reject"}
        if args.action in needs_id and not (getattr(args, "token_id", None)
                                            or getattr(args, "enrolment_id", None)):
            raise SystemExit(f"epns-server: {args.action} needs an id")
        asyncio.run(_with_services(settings, args, actions[args.action]))
    return run


async def _with_services(settings: ServerSettings, args: argparse.Namespace,
                         work: Work) -> None:
    services = await services_module.build(settings)
    try:
        await work(services, args)
    finally:
        await services.stop()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


async def _create(services: Services, args: argparse.Namespace) -> None:
    made = await services.enrolment().create_token(
        args.group or [], args.ttl, args.agent_id, "cli", max_uses=args.max_uses,
        approval=args.approval)
    _say(made.token)
    settings = services.settings
    url = public_url(settings)
    uses = "any number of machines" if made.max_uses is None else f"{made.max_uses} machine(s)"
    lines = [f"enrolment token {made.id}: {uses}, valid {args.ttl:.0f} s"
             + (", each enrolment waits for approval (epns-server enrolment accept ID)"
                if made.approval else "") + "; it is shown only now.",
             "On a machine with the agent and the fleet CA:",
             f"  epns-agent enrol --server {url} --token {made.token} --ca ca.crt"
             + (f" --id {made.agent_id}" if made.agent_id else "")]
    try:
        installer.offer(settings)
    except NotFound as exc:
        lines.append(f"No one-line installer: {exc}")
    else:
        lines += ["On any Linux machine, as root (installs the agent, enrols, starts it):",
                  "  " + installer.command(url, installer.ca_fingerprint(settings), made.token)]
    sys.stderr.write("\n".join(lines) + "\n")


async def _list_tokens(services: Services, _args: argparse.Namespace) -> None:
    for token in await services.enrolment().tokens():
        limit = "unlimited" if token["max_uses"] is None else token["max_uses"]
        _say(f"{token['id']}  {token['state']:<8} uses {token['uses']}/{limit}"
             f"{'  approval' if token['approval'] else ''}  expires {_when(token['expires_at'])}"
             f"  groups {','.join(token['groups']) or '-'}"
             + (f"  agent {token['agent_id']}" if token["agent_id"] else ""))


async def _show_token(services: Services, args: argparse.Namespace) -> None:
    _say(json.dumps(await services.enrolment().token(args.token_id), indent=2))


async def _revoke(services: Services, args: argparse.Namespace) -> None:
    await services.enrolment().revoke(args.token_id, "cli")
    _say(f"enrolment token {args.token_id} revoked: it enrols no one any more")


async def _list_enrolments(services: Services, args: argparse.Namespace) -> None:
    for row in await services.enrolment().enrolments((args.state,) if args.state else ()):
        _say(f"{row['id']}  {row['state']:<8} {_when(row['created_at'])}  "
             f"asks {row['requested_id']}  host {row['hostname'] or '-'}  from "
             f"{row['address'] or '-'}  agent {row['agent_id'] or '-'}")


async def _accept(services: Services, args: argparse.Namespace) -> None:
    row = await services.enrolment().accept(args.enrolment_id, "cli")
    _say(f"enrolment {row['id']} accepted: agent {row['agent_id']}; the installer picks up "
         "its certificate at its next poll")


async def _reject(services: Services, args: argparse.Namespace) -> None:
    row = await services.enrolment().reject(args.enrolment_id, "cli", args.reason)
    _say(f"enrolment {row['id']} rejected")
