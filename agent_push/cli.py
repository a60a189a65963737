"""``epns-agent``: the endpoint agent.

    epns-agent run    --config agent.toml    run in the foreground (for systemd)
    epns-agent status --config agent.toml    what the running agent is doing
    epns-agent service install|remove        the Windows service (epns-agent[windows])
    epns-agent enrol --server URL --token T --ca ca.crt [--id ID] [--dir /etc/epns]
                                             trade an enrolment token for an identity
    epns-agent enrol --resume [--dir /etc/epns]
                                             take up an enrolment waiting for approval
    epns-agent trust reset [--key signing.pub] [--ca ca.crt] [--config agent.toml]
                                             the server's current key and CA after a
                                             missed rotation (docs/rotation.md)

Settings come from the TOML file, ``EPNS_AGENT_*`` variables and, for the
proxy, ``HTTPS_PROXY``/``NO_PROXY``; they are read once here and passed down.
Without ``--config`` the file is the system's (``agent_push.platform``:
/etc/epns/agent.toml on Linux) when there is one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent_push import platform
from agent_push.agent import Agent, AgentContext
from agent_push.renewal import recover
from agent_push.state import STATUS, read_json
from agent_push.sync import TlsFiles
from agent_push.trust import TRUST
from epns import __version__, logs, tls
from epns.agent_config import AgentSettings, load_agent_settings
from epns.envelope import key_id
from epns.errors import ConfigError, EPNSError, PKIError
from epns.tokens import PublicKey

_log = logging.getLogger(__name__)

# An Ed25519 public key in DER (SubjectPublicKeyInfo, RFC 8410: no parameters)
# is always these 12 bytes, then the key's 32.
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")
_PEM_PUBLIC_KEY = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----",
                             re.DOTALL)


def load_command_key(path: Path) -> PublicKey:
    """The server's Ed25519 public key, from the PEM file the agent pins.

    Read by hand rather than with ``epns.pki.load_public_key``: cryptography's
    serialization and x509 modules would add 2 MiB to the agent's idle memory."""
    try:
        found = _PEM_PUBLIC_KEY.search(path.read_text(encoding="ascii"))
        if found is None:
            raise ValueError("no PEM public key in it")
        der = base64.b64decode("".join(found.group(1).split()), validate=True)
    except (OSError, ValueError) as exc:  # binascii.Error is a ValueError
        raise PKIError(f"cannot read public key {path}: {exc}") from exc
    if len(der) != len(_ED25519_SPKI) + 32 or not der.startswith(_ED25519_SPKI):
        raise PKIError(f"{path} is not an Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(der[len(_ED25519_SPKI):])


def build_context(settings: AgentSettings) -> AgentContext:
    """Load keys, certificates and the token once (after finishing a renewal
    a crash interrupted); a ConfigError names the file."""
    ident, broker = settings.identity, settings.broker
    try:
        recovered = recover(ident)
    except OSError as exc:
        raise ConfigError(f"cannot finish the interrupted renewal of the identity: {exc}") \
            from exc
    if recovered is not None:
        logs.event(_log, "renewal_recovered", detail=recovered)
    try:
        command_key = load_command_key(broker.server_public_key)
    except EPNSError as exc:
        raise ConfigError(f"broker.server_public_key: {exc}") from exc
    token = None
    if ident.token_file is not None:
        try:
            token = ident.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read identity.token_file: {exc}") from exc
    broker_tls = tls.client_context(broker.ca, ident.cert, ident.key, alpn=tls.MQTT_ALPN)
    websocket_tls = tls.client_context(broker.ca, ident.cert, ident.key, alpn=tls.WEBSOCKET_ALPN)
    sync_tls = TlsFiles(settings.sync.ca or broker.ca, ident.cert, ident.key)
    if settings.sync.action == "http" and settings.sync.ca is not None:
        # The HTTP exchange builds its own context at each sync; this one,
        # dropped at once, makes an unreadable sync.ca a config error now.
        tls.client_context(settings.sync.ca)
    # The package's own version, as the sync's User-Agent says it: reading the
    # installed metadata (importlib.metadata) would cost 1 MiB of idle memory.
    return AgentContext(settings, command_key, broker_tls, websocket_tls, sync_tls, token,
                        __version__)


async def _run(agent: Agent) -> None:
    stop = asyncio.Event()
    platform.install_stop_handlers(asyncio.get_running_loop(), stop.set)
    await agent.run(stop)


def run(settings: AgentSettings) -> int:
    """``epns-agent run``: until SIGTERM or SIGINT (Ctrl+C or Ctrl+Break on
    Windows; a Windows service stops through agent_push.windows_service)."""
    logs.configure(settings.log.level, settings.log.format)
    agent = Agent(build_context(settings))
    # asyncio's own loop, not uvloop as in the broker: one connection gains
    # nothing from uvloop, which would add 2 MiB to the agent's idle memory.
    with contextlib.suppress(KeyboardInterrupt):
        platform.run(_run(agent))
    return 0


def status(settings: AgentSettings, now: float) -> int:
    """``epns-agent status``: 0 when connected, 1 when not, 3 when not running."""
    data = read_json(settings.state_dir / STATUS)
    running = bool(data) and _alive(data.get("pid"))
    sys.stdout.write("".join(f"{line}\n" for line in describe(data, running, now)))
    if not running:
        return 3
    return 0 if answering(data, now) else 1


def answering(data: Mapping[str, Any], now: float) -> bool:
    """Connected, and heard from within the connection's deaf bound
    (``epns.liveness``): past it, the agent is giving the path up, or wedged."""
    heard, bound = data.get("last_heard"), data.get("deaf_bound")
    if not data.get("connected"):
        return False
    if isinstance(heard, int | float) and isinstance(bound, int | float):
        return now - heard <= bound
    return True


def describe(data: Mapping[str, Any], running: bool, now: float) -> list[str]:
    """The status report, one line per fact, in plain words."""
    if not data:
        return ["agent: never started with this state directory"]
    lines = [f"agent: {data.get('agent_id')} (pid {data.get('pid')}, "
             f"{'running' if running else 'NOT running'})"]
    since = _ago(data.get("since"), now)
    if answering(data, now):
        lines.append(f"push: connected via {data.get('route')} since {since}; broker last "
                     f"heard {_ago(data.get('last_heard'), now)}")
    elif data.get("connected"):
        lines.append(f"push: NOT answering on {data.get('route')}: nothing heard from the "
                     f"broker since {_ago(data.get('last_heard'), now)}, more than "
                     f"{data.get('deaf_bound'):.0f} s")
    else:
        lines.append(f"push: not connected (since {since}); last route {data.get('route')}")
    retry = data.get("next_retry")
    if not data.get("connected") and isinstance(retry, int | float):
        lines.append(f"next retry: in {max(0.0, retry - now):.0f} s")
    lines.append("last wake-up: " + _event(data.get("last_wake"), now))
    lines.append("last sync: " + _event(data.get("last_sync"), now))
    lines += _identity(data.get("identity"), now)
    lines += _trust(data.get("trust"))
    lines.append(f"last error: {data.get('last_error') or 'none'}")
    return lines


def _identity(item: Any, now: float) -> list[str]:
    """The identity's expiry, its last renewal and the next one."""
    if not isinstance(item, dict):
        return []
    expires, due = item.get("expires_at"), item.get("next_renewal")
    lines = []
    if isinstance(expires, int | float):
        left = expires - now
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires))
        lines.append(f"identity: expires {when} "
                     + (f"(in {_span(left)})" if left > 0 else "(EXPIRED)"))
    lines.append("last renewal: " + _event(item.get("last_renewal"), now))
    if isinstance(due, int | float):
        lines.append(f"next renewal: in {_span(max(0.0, due - now))}")
    return lines


def _trust(item: Any) -> list[str]:
    """The keys commands are taken from, and a refusal a rotation explains."""
    if not isinstance(item, dict):
        return []
    keys = item.get("keys")
    if not isinstance(keys, dict):
        keys = {}
    lines = [f"trust: serial {item.get('serial')}, keys "
             + ", ".join(f"{kid} ({state})" for kid, state in keys.items())]
    cas = item.get("cas")
    if isinstance(cas, dict) and cas:
        lines.append("fleet CAs (SHA-256): "
                     + ", ".join(f"{fp} ({state})" for fp, state in cas.items()))
    if item.get("problem"):
        lines.append(f"TRUST PROBLEM: {item['problem']}")
    return lines


def trust_reset(settings: AgentSettings, key_file: Path | None, ca_file: Path | None) -> int:
    """``epns-agent trust reset [--key FILE] [--ca FILE]``: the way back for an
    agent that missed a whole rotation. The server's current signing.pub and
    ca.crt (got by hand from an operator: they are the roots of what the agent
    trusts) replace the pinned key and broker.ca, and the trust the agent had
    learnt is dropped; the agent takes them at its next start."""
    if key_file is None and ca_file is None:
        raise ConfigError("trust reset needs --key (the server's signing.pub), --ca (its "
                          "ca.crt), or both")
    said = []
    if key_file is not None:
        key = load_command_key(key_file)
        _install(key_file, settings.broker.server_public_key)
        said.append(f"{settings.broker.server_public_key} now pins key {key_id(key)}")
    if ca_file is not None:
        if settings.broker.ca is None:
            raise ConfigError("broker.ca is not set: this agent trusts the system's CAs")
        tls.client_context(ca_file)  # a file that is no CA is refused here
        _install(ca_file, settings.broker.ca)
        said.append(f"{settings.broker.ca} now holds {ca_file}'s CA")
    (settings.state_dir / TRUST).unlink(missing_ok=True)
    sys.stdout.write("; ".join(said) + "; restart the agent to use it\n")
    return 0


def _install(source: Path, target: Path) -> None:
    scratch = target.with_name(f".{target.name}.tmp")
    scratch.write_text(source.read_text(encoding="ascii"), encoding="ascii")
    os.replace(scratch, target)


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds:.0f} s"


def _event(item: Any, now: float) -> str:
    if not isinstance(item, dict):
        return "none yet"
    result = item.get("result") or ("ok" if item.get("ok") else item.get("detail"))
    return f"{_ago(item.get('at'), now)}: {result}"


def _ago(at: Any, now: float) -> str:
    if not isinstance(at, int | float):
        return "unknown"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"{stamp} ({max(0.0, now - at):.0f} s ago)"


def _alive(pid: Any) -> bool:
    return isinstance(pid, int) and platform.process_alive(pid)


def load_settings(config: Path | None) -> AgentSettings:
    """The settings from ``config``; without one, from the system's config
    file when it exists, else from the environment alone."""
    if config is not None:
        return load_agent_settings(config, os.environ)
    default = platform.default_config()
    if default.is_file():
        return load_agent_settings(default, os.environ)
    try:
        return load_agent_settings(None, os.environ)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (no --config given, and no {default})") from exc


def _enrol_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "enrol", help="trade an enrolment token for this machine's identity",
        description="Exit status: 0 enrolled, 2 refused or failed, 4 still waiting for an "
                    "admin's approval (take it up again with --resume).")
    sub.add_argument("--server", help="the server, https://HOST:PORT")
    sub.add_argument("--token", help="the enrolment token")
    sub.add_argument("--ca", type=Path, help="the fleet CA, to trust the server")
    sub.add_argument("--id", dest="agent_id",
                     help="this agent's id (default: the server makes one of the host name, "
                          "unique across machines)")
    sub.add_argument("--dir", type=Path, default=platform.default_config().parent,
                     help="where the identity is written (default: the directory of the "
                          f"system's agent.toml, {platform.default_config().parent})")
    sub.add_argument("--wait", type=float, default=3600.0,
                     help="seconds to wait for an admin's approval (default an hour)")
    sub.add_argument("--no-wait", action="store_const", const=0.0, dest="wait",
                     help="do not wait for an approval; say how to resume")
    sub.add_argument("--resume", action="store_true",
                     help="take up the enrolment waiting for approval in --dir")


def _enrol(args: argparse.Namespace) -> int:
    # Imported here: the CSR needs cryptography's x509, which `run` must not load.
    from agent_push.enrol import StillPending, enrol, resume, tell  # noqa: PLC0415

    if args.resume:
        done = resume(args.dir, wait=args.wait, say=tell)
    elif args.server is None or args.token is None or args.ca is None:
        sys.stderr.write("epns-agent enrol: --server, --token and --ca are needed (or "
                         "--resume)\n")
        return 2
    else:
        done = enrol(args.server, args.token, args.ca, args.agent_id, args.dir,
                     wait=args.wait, say=tell)
    if isinstance(done, StillPending):
        sys.stdout.write(f"enrolment {done.enrolment_id} waits for an admin's approval; "
                         f"once accepted:  epns-agent enrol --resume --dir {done.directory}\n")
        return 4
    sys.stdout.write(f"enrolled as {done.agent_id}: run it with  epns-agent run --config "
                     f"{done.config}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``epns-agent``."""
    parser = argparse.ArgumentParser(prog="epns-agent", description="The epns endpoint agent.")
    commands = parser.add_subparsers(dest="command", required=True)
    default = platform.default_config()
    for name, text in (("run", "run in the foreground"), ("status", "show what it is doing")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", type=Path,
                         help=f"agent.toml (default: {default}, when it exists)")
    _enrol_parser(commands)
    trust = commands.add_parser("trust", help="reset the keys commands are taken from "
                                              "(after a missed key rotation)")
    trust.add_argument("action", choices=("reset",))
    trust.add_argument("--key", type=Path,
                       help="the server's current public key (its signing.pub)")
    trust.add_argument("--ca", type=Path, help="the server's current fleet CA (its ca.crt)")
    trust.add_argument("--config", type=Path,
                       help=f"agent.toml (default: {default}, when it exists)")
    service = commands.add_parser("service", help="install or remove the Windows service")
    service.add_argument("action", choices=("install", "remove"))
    service.add_argument("--config", type=Path, default=default,
                         help=f"the agent.toml the service runs with (default: {default})")
    args = parser.parse_args(argv)
    try:
        if args.command == "enrol":
            return _enrol(args)
        if args.command == "service":
            platform.service(args.action, str(args.config))
            return 0
        settings = load_settings(args.config)
        if args.command == "status":
            return status(settings, time.time())
        if args.command == "trust":
            return trust_reset(settings, args.key, args.ca)
        return run(settings)
    except EPNSError as exc:
        sys.stderr.write(f"epns-agent: {exc}\n")
        return 3 if isinstance(exc, ConfigError) else 2
