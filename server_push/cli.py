"""``epns-server``: the management server and its admin commands.

    epns-server run [--config server.toml]            API, console, sync; the embedded broker too
    epns-server agent create ID [--group G] [--token] [--out DIR]
                                                      an agent identity and its config bundle
    epns-server agent revoke ID [--reason TEXT]
    epns-server agent retire ID [--reason TEXT]       revoked, kept with its history, out of lists
    epns-server agent groups ID [--group G ...]       replace its groups (none: no --group)
    epns-server agent list [--presence P] [--group G] [--sort F] [--limit N] [--json] ...
                                                      the fleet, filtered, a page (fleet_cli.py)
    epns-server token create NAME [--ttl S]           an API token for an integration (printed once)
    epns-server token list [--json] | revoke ID       API tokens, without their secrets
    epns-server enrol-token create [--group G] [--ttl S] [--max-uses N | --unlimited]
                               [--approval] [--agent-id ID]
                                                      a token for epns-agent enrol and the
                                                      one-line installer (enrol_cli.py)
    epns-server enrol-token list | show ID | revoke ID
    epns-server enrolment list | accept ID | reject ID    enrolments waiting for approval
    epns-server audit [--actor A] [--action X] [--target T] [--since T] [--until T] [--csv]
                                                      the audit log, filtered (audit_cli.py)
    epns-server campaign list | create NAME --at HH:MM ... | run ID | report RUN_ID
                                                      wake campaigns (campaign_cli.py)
    epns-server admin password [USER]                 set a console password (generated, printed)
    epns-server user add|list|disable|enable|delete|passwd [NAME]   console users (user_cli.py)
    epns-server health                                exit 0 when the running server is healthy
    epns-server rotate signing-key begin [--overlap S] | finish [--force] | status
                                                      rotate the command-signing key
    epns-server rotate ca begin [--overlap S] | switch [--force] | finish [--force] | status
                                                      rotate the fleet CA (docs/rotation.md)
    epns-server backup --out FILE | restore FILE --into DIR [--force]
                                                      encrypted backups (backup_cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from epns import logs, pki
from epns.errors import ConfigError, EPNSError
from epns.logs import event
from epns.server_config import ServerSettings, load_server_settings
from server_push import audit_cli, backup_cli, enrol_cli, fleet_cli, state_files, user_cli
from server_push import services as services_module
from server_push.campaign_cli import register as register_campaign_cli
from server_push.embedded import PIDFILE, EmbeddedBroker
from server_push.fleet.agents import public_url
from server_push.health_probe import probe
from server_push.security import rotation
from server_push.security.auth import MAX_TOKEN_TTL, MIN_TOKEN_TTL
from server_push.security.secrets_file import session_secret
from server_push.services import Services
from server_push.store.history import audit
from server_push.web.app import create_app
from server_push.web.front import FrontListener
from server_push.web.https import ASGIApp, dual_stack_socket, make_server

log = logging.getLogger(__name__)
ADMIN = "admin"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _init_pki(settings: ServerSettings) -> bool:
    """Make the dev PKI where it is missing; True when it is new."""
    names = tuple(dict.fromkeys(("localhost", socket.gethostname(), "127.0.0.1", "::1")))
    new = not (settings.pki.dir / pki.CA_CERT).exists()
    pki.init_dev_pki(settings.pki.dir, names)
    return new


async def _first_admin(services: Services) -> Path | None:
    """Make the admin login on first start; returns the 0600 file its password
    is in (never printed: under systemd stdout is the journal)."""
    if await services.credentials.has_users():
        return None
    password = secrets.token_urlsafe(12)
    if not await services.credentials.create_user(ADMIN, password):
        return None
    return state_files.write_initial_password(services.settings, ADMIN, password)


def _welcome(settings: ServerSettings, password: Path | None, config: Path | None,
             new_pki: bool) -> None:
    url = public_url(settings)
    folder = settings.pki.dir
    lines = ["", "epns is running.",
             f"  Console   {url}/   (trust {folder / pki.CA_CERT} in your browser)",
             f"  API docs  {url}/api/docs"]
    if new_pki:
        lines += [f"  PKI       new development PKI in {folder}/: fleet CA {pki.CA_CERT}, "
                  f"broker and server certificates, command signing key {pki.SIGNING_KEY}",
                  "            (keep it: agents enrolled against it trust only this CA)"]
    if password is not None:
        lines += [f"  Login     user '{ADMIN}', password in {password}",
                  "            (readable by this user only; changing the password deletes it:",
                  "            click the user name in the console, or epns-server admin password)"]
    conf = f" --config {config}" if config else ""
    lines += ["", "Add an agent (a second terminal):",
              f"  .venv/bin/epns-server{conf} agent create laptop-1 --out agents/laptop-1",
              "  .venv/bin/epns-agent run --config agents/laptop-1/agent.toml", ""]
    _say("\n".join(lines))


async def _serve(settings: ServerSettings, config: Path | None, new_pki: bool) -> None:
    """Run the server, and the embedded broker as its child: whatever ends the
    server (a signal, an error), the broker is stopped on the way out, and
    the kernel stops it if the server dies too hard for that (``embedded.py``)."""
    broker: EmbeddedBroker | None = None
    broker_task: asyncio.Task[None] | None = None
    try:
        if settings.broker.enabled:
            broker = EmbeddedBroker(settings.broker.config, settings.state_dir / PIDFILE,
                                    settings.front_socket)
            broker_task = asyncio.create_task(broker.run())
            if not await broker.wait_ready():
                event(log, "broker_not_ready", logging.ERROR,
                      hint="see the [broker] lines above; the server keeps trying to connect")
        await _serve_http(settings, config, new_pki)
    finally:
        if broker is not None and broker_task is not None:
            await broker.stop()
            await broker_task
    event(log, "stopped")


async def _serve_http(settings: ServerSettings, config: Path | None, new_pki: bool) -> None:
    services = await services_module.build(settings)
    try:
        password = await _first_admin(services)
        app = create_app(services, session_secret(settings.console.secrets_file))
        server = make_server(app, settings.http)
        front = _front_listener(app, settings.front_socket)
        services.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listening = dual_stack_socket(settings.http)
        http_task = asyncio.create_task(server.serve(None if listening is None else [listening]))
        if front is not None:
            front.start()
        while not server.started and not http_task.done():
            await asyncio.sleep(0.05)
        if http_task.done():
            http_task.result()
            raise EPNSError(f"the HTTPS listener on {settings.http.host}:{settings.http.port} "
                            "did not start (port in use?)")
        event(log, "ready", url=public_url(settings))
        _welcome(settings, password, config, new_pki)
        await stop.wait()
        event(log, "stopping")
        # Open console event streams end now; otherwise the HTTP server's graceful
        # shutdown would wait for them until its timeout.
        services.bus.close()
        server.should_exit = True
        if front is not None:
            await front.stop()
        await http_task
    finally:
        await services.stop()


def _front_listener(app: ASGIApp, path: Path | None) -> FrontListener | None:
    """The front socket, when on; one that cannot be opened is a message and
    the server serves on without it (HTTPS on the one port 443 then fails
    with the broker's 502 that says so)."""
    if path is None:
        return None
    try:
        return FrontListener(app, path)
    except ConfigError as exc:
        event(log, "front_socket_unavailable", logging.ERROR, error=str(exc))
        return None


async def _with_services(settings: ServerSettings,
                         work: Callable[[Services], Awaitable[None]]) -> None:
    services = await services_module.build(settings)
    try:
        await work(services)
    finally:
        await services.stop()


def _write_bundle(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600 if name.endswith((".key", ".token")) else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)


def _cmd_run(settings: ServerSettings, args: argparse.Namespace) -> None:
    tightened = state_files.tighten_state(settings)
    if tightened:
        event(log, "state_files_tightened", logging.WARNING, changed="; ".join(tightened))
    new_pki = _init_pki(settings) if settings.broker.enabled else False
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings, args.config, new_pki))


def _cmd_agent(settings: ServerSettings, args: argparse.Namespace) -> None:
    async def create(services: Services) -> None:
        bundle = await services.agents.create(args.agent_id, args.group or [],
                                              "token" if args.token else "certificate",
                                              "cli")
        out = args.out or Path("agents") / args.agent_id
        _write_bundle(out, bundle.files)
        _say(f"agent {args.agent_id}: bundle in {out}/\n"
             f"  run it: epns-agent run --config {out / 'agent.toml'}")

    async def revoke(services: Services) -> None:
        await services.agents.revoke(args.agent_id, "cli", args.reason or "revoked by an admin")
        _say(f"agent {args.agent_id} revoked: the broker closes its connection within seconds")

    async def retire(services: Services) -> None:
        await services.agents.retire(args.agent_id, "cli", args.reason or "retired by an admin")
        _say(f"agent {args.agent_id} retired: revoked, its history kept")

    async def listed(services: Services) -> None:
        _say(await fleet_cli.list_agents(services, args))

    async def groups(services: Services) -> None:
        names = await services.agents.set_groups(args.agent_id, args.group or [], "cli")
        _say(f"agent {args.agent_id}: groups {', '.join(names) or 'none'}")

    if args.action != "list" and not args.agent_id:
        raise ConfigError(f"agent {args.action} needs the agent's id")
    work = {"create": create, "revoke": revoke, "retire": retire, "list": listed,
            "groups": groups}[args.action]
    asyncio.run(_with_services(settings, work))


def _cmd_token(settings: ServerSettings, args: argparse.Namespace) -> None:
    async def create(services: Services) -> None:
        if args.ttl is not None and not MIN_TOKEN_TTL <= args.ttl <= MAX_TOKEN_TTL:
            raise ConfigError(f"--ttl must be {MIN_TOKEN_TTL:.0f} to {MAX_TOKEN_TTL:.0f} "
                              "seconds (or left out: valid until revoked)")
        expires_at = None if args.ttl is None else time.time() + args.ttl
        token_id, token = await services.credentials.create_token(args.name, "cli",
                                                                  expires_at=expires_at)
        _say(token)
        sys.stderr.write(f"API token {args.name!r} (id {token_id}); it is shown only now\n")

    async def listed(services: Services) -> None:
        _say(await fleet_cli.list_tokens(services, args.json))

    async def revoke(services: Services) -> None:
        _say(await fleet_cli.revoke_token(services, args.name))

    if args.action != "list" and not args.name:
        raise ConfigError(f"token {args.action} needs "
                          f"{'a name' if args.action == 'create' else 'the token id'}")
    asyncio.run(_with_services(settings, {"create": create, "list": listed,
                                          "revoke": revoke}[args.action]))


def _cmd_admin(settings: ServerSettings, args: argparse.Namespace) -> None:
    async def password(services: Services) -> None:
        value = os.environ.get("EPNS_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        ended = await services.credentials.set_password(args.user, value)
        state_files.forget_initial_password(settings, args.user)
        _say(f"console user {args.user!r}, password {value!r}")
        sys.stderr.write(f"{ended} console session(s) of {args.user!r} ended\n")

    asyncio.run(_with_services(settings, password))


def _cmd_health(settings: ServerSettings, _args: argparse.Namespace) -> None:
    healthy, detail = probe(settings.http)
    _say(detail)
    if not healthy:
        raise SystemExit(1)


def _cmd_rotate(settings: ServerSettings, args: argparse.Namespace) -> None:
    directory, now = settings.pki.dir, time.time()
    state = rotation.load(directory)
    if args.step == "status":
        _say("\n".join(rotation.describe(state, now)))
        if state.ca_switched_at is not None:
            _say(_old_ca_agents(settings, state.ca_switched_at))
        return
    overlap = settings.pki.rotation_overlap if args.overlap is None else args.overlap
    if overlap < 0:
        raise ConfigError("--overlap must not be negative")
    if args.what == "signing-key" and args.step == "begin":
        made = rotation.begin(directory, overlap=overlap, now=now)
    elif args.what == "signing-key" and args.step == "finish":
        made = rotation.finish(directory, now=now, command_grace=settings.wakeups.max_ttl,
                               token_ttl=settings.identity.token_lifetime, force=args.force)
    elif args.what == "ca" and args.step == "begin":
        made = rotation.ca_begin(directory, overlap=overlap, now=now)
    elif args.what == "ca" and args.step == "switch":
        made = rotation.ca_switch(directory, now=now, force=args.force)
    elif args.what == "ca" and args.step == "finish":
        if state.ca_switched_at is not None and not args.force:
            left = _old_ca_agents(settings, state.ca_switched_at)
            if not left.startswith("no agent"):
                raise ConfigError(f"{left}: once the old CA is dropped they cannot connect. "
                                  "Wake them (they renew at their next sync), or --force")
        made = rotation.ca_finish(directory, now=now)
    else:
        raise ConfigError(f"rotate {args.what} has no step {args.step!r}")

    async def record(services: Services) -> None:
        async with services.sessions() as session, session.begin():
            audit(session, at=now, actor="cli",
                  action=f"rotate_{args.what.replace('-', '_')}_{args.step}",
                  targets=[key.id for key in made.trust.keys]
                  + [ca.fingerprint[:16] for ca in made.trust.cas],
                  outcome=f"trust serial {made.trust.serial}")

    asyncio.run(_with_services(settings, record))
    _say("\n".join(rotation.describe(made, now)))
    _say(f"the running server announces it to every agent within "
         f"{settings.pki.rotation_check_interval:.0f} s; brokers take the token keys of "
         f"{pki.SIGNING_PUB} within a second")


def _old_ca_agents(settings: ServerSettings, switched_at: float) -> str:
    """The certificate agents not renewed since the CA switched, in words."""
    found: list[str] = []

    async def query(services: Services) -> None:
        found.extend(await services.agents.holding_certificates_before(switched_at))

    asyncio.run(_with_services(settings, query))
    if not found:
        return "no agent holds a certificate from the old CA"
    shown = ", ".join(found[:20]) + (f" and {len(found) - 20} more" if len(found) > 20 else "")
    return f"{len(found)} agent(s) still hold a certificate from the old CA: {shown}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epns-server", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="server.toml (optional)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the server (and the embedded broker)").set_defaults(
        run=_cmd_run)
    agent = sub.add_parser("agent", help="create, revoke, retire, regroup or list agents")
    agent.add_argument("action", choices=("create", "revoke", "retire", "groups", "list"))
    agent.add_argument("agent_id", nargs="?",
                       help="create, revoke, retire, groups: the agent's id")
    agent.add_argument("--group", action="append",
                       help="create, groups: its group; list: in this group (repeatable)")
    agent.add_argument("--token", action="store_true",
                       help="a token identity instead of a client certificate")
    agent.add_argument("--out", type=Path, help="bundle directory (default agents/ID)")
    agent.add_argument("--reason", help="revoke, retire: why")
    fleet_cli.add_list_options(agent)
    agent.set_defaults(run=_cmd_agent)
    token = sub.add_parser("token", help="API tokens")
    token.add_argument("action", choices=("create", "list", "revoke"))
    token.add_argument("name", nargs="?", help="create: the token's name; revoke: its id")
    token.add_argument("--json", action="store_true", help="list: JSON instead of a table")
    token.add_argument("--ttl", type=float, metavar="SECONDS",
                       help="create: seconds until it expires (default: valid until revoked)")
    token.set_defaults(run=_cmd_token)
    enrol_cli.register(sub)
    audit_cli.register(sub)
    user_cli.register(sub)
    backup_cli.register(sub)
    register_campaign_cli(sub)
    admin = sub.add_parser("admin", help="console users")
    admin.add_argument("action", choices=("password",))
    admin.add_argument("user", nargs="?", default=ADMIN)
    admin.set_defaults(run=_cmd_admin)
    sub.add_parser("health", help="ask the running server's /api/v1/health (exit 0 = ok)"
                   ).set_defaults(run=_cmd_health)
    rotate = sub.add_parser("rotate", help="rotate the command-signing key or the fleet CA "
                                           "(docs/rotation.md)")
    rotate.add_argument("what", choices=("signing-key", "ca"))
    rotate.add_argument("step", choices=("begin", "switch", "finish", "status"))
    rotate.add_argument("--overlap", type=float,
                        help="begin: seconds agents have to learn the next key or CA "
                             "(default pki.rotation_overlap)")
    rotate.add_argument("--force", action="store_true",
                        help="go on before the overlap has run out (signing-key finish, ca "
                             "switch), or while agents hold old-CA certificates (ca finish)")
    rotate.set_defaults(run=_cmd_rotate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``epns-server``."""
    args = _parser().parse_args(argv)
    # Whatever the server makes (database, keys, secrets, bundles) is its user's only.
    state_files.restrict_new_files()
    try:
        settings = load_server_settings(args.config, os.environ)
        logs.configure(settings.log.level, settings.log.format)
        args.run(settings, args)
    except EPNSError as exc:
        sys.stderr.write(f"epns-server: {exc}\n")
        return 2
    return 0
