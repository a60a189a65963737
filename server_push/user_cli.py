"""``epns-server user``: console users from the command line, as the API
changes them (``security/users.py``, audited as ``cli``).

    epns-server user add NAME [--role admin]   password from EPNS_ADMIN_PASSWORD, else
                                               generated and printed once
    epns-server user list [--json]
    epns-server user disable NAME | enable NAME | delete NAME
    epns-server user passwd NAME               a new password (EPNS_ADMIN_PASSWORD or
                                               generated, printed); ends its sessions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from epns.errors import ConfigError, RequestError
from epns.server_config import ServerSettings
from server_push import services as services_module
from server_push import state_files
from server_push.security.users import ROLES, Users, generated_password

ACTOR = "cli"


def register(sub: Any) -> None:
    """Add ``user`` to ``epns-server``'s subparsers."""
    parser = sub.add_parser("user", help="console users: add, list, disable, enable, "
                                         "delete, passwd")
    parser.add_argument("action", choices=("add", "list", "disable", "enable", "delete",
                                           "passwd"))
    parser.add_argument("name", nargs="?", help="the user name (all but list)")
    parser.add_argument("--role", choices=ROLES, default="admin", help="add: the role")
    parser.add_argument("--json", action="store_true", help="list: JSON instead of a table")
    parser.set_defaults(run=_run)


def _run(settings: ServerSettings, args: argparse.Namespace) -> None:
    if args.action != "list" and not args.name:
        raise ConfigError(f"user {args.action} needs the user's name")
    try:
        out = asyncio.run(_act(settings, args))
    except RequestError as exc:
        # The API's refusal (unknown user, the last admin, a weak password), said as it is.
        raise ConfigError(exc.detail) from exc
    sys.stdout.write(out + "\n")


async def _act(settings: ServerSettings, args: argparse.Namespace) -> str:
    services = await services_module.build(settings)
    try:
        users = Users(services.sessions)
        name = args.name or ""
        if args.action == "list":
            return _table(await users.listed(), as_json=args.json)
        if args.action == "add":
            password = os.environ.get("EPNS_ADMIN_PASSWORD") or generated_password()
            await users.add(name, password, ACTOR, args.role)
            return f"console user {name!r} ({args.role}), password {password!r}"
        if args.action in ("disable", "enable"):
            view = await users.set_disabled(name, args.action == "disable", ACTOR)
            return f"user {name!r} {'disabled' if view['disabled'] else 'enabled'}"
        if args.action == "delete":
            await users.delete(name, ACTOR)
            state_files.forget_initial_password(settings, name)
            return f"user {name!r} deleted"
        password, ended = await users.reset_password(
            name, ACTOR, os.environ.get("EPNS_ADMIN_PASSWORD") or None)
        state_files.forget_initial_password(settings, name)
        sys.stderr.write(f"{ended} console session(s) of {name!r} ended\n")
        return f"console user {name!r}, password {password!r}"
    finally:
        await services.stop()


def _table(rows: list[dict[str, Any]], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(rows, indent=2)
    lines = [f"{'USER':<24} {'ROLE':<8} {'STATE':<9} CREATED"]
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["created_at"]))
        state = "disabled" if row["disabled"] else "enabled"
        lines.append(f"{row['username']:<24} {row['role']:<8} {state:<9} {created} UTC")
    return "\n".join(lines)
