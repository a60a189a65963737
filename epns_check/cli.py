"""``epns-check``: tells a support person why an agent gets no wake-ups, and
what to change.

    epns-check --config agent.toml [--api-token T] [--route direct:443] [--json]
    epns-check --agent-id ID --host HOST --port 8883 --port 443 --ca ca.crt
               --cert agent.crt --key agent.key [--proxy http://user:pw@proxy:3128]
    epns-check --server [--config server.toml] [--broker-config broker.toml]

Exit codes: 0 push works on the primary route; 1 only on a fallback route,
or with warnings; 2 push does not work; 3 a usage or configuration error.
Settings are read as the agent reads them: the TOML file, ``EPNS_AGENT_*``
and ``HTTPS_PROXY``/``NO_PROXY``; flags win over both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from epns import __version__
from epns.agent_config import ENV_PREFIX, AgentSettings, load_agent_settings
from epns.errors import ConfigError
from epns_check import render
from epns_check.agent_check import AgentCheck, CheckOptions
from epns_check.report import EXIT_CONFIG, Finding, Report, Result, Status, Step, Verdict
from epns_check.server_check import ServerCheck

API_TOKEN_ENV = "EPNS_API_TOKEN"  # noqa: S105 - a variable name


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on a usage error; 2 means "push does not work" here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="epns-check", description=__doc__.splitlines()[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="What every FAIL means: docs/troubleshooting.md")
    parser.add_argument("--config", type=Path,
                        help="the agent's agent.toml (with --server: server.toml)")
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    parser.add_argument("--route", help="test one route only, e.g. direct:443 or proxy:8883")
    parser.add_argument("--no-takeover", action="store_true",
                        help="stop after TLS: do not connect with the agent's identity, which "
                             "would take a running agent's session over")
    agent = parser.add_argument_group("the agent (instead of, or over, agent.toml)")
    agent.add_argument("--agent-id")
    agent.add_argument("--host", help="the broker's host name")
    agent.add_argument("--port", type=int, action="append",
                       help="a broker port, primary first (repeatable)")
    agent.add_argument("--proxy", help="http://[user:password@]host:port; '' for none")
    agent.add_argument("--ca", type=Path, help="the fleet CA")
    agent.add_argument("--cert", type=Path, help="the agent's client certificate")
    agent.add_argument("--key", type=Path, help="the agent's private key")
    agent.add_argument("--token-file", type=Path, help="the agent's token, instead of a cert")
    agent.add_argument("--server-key", type=Path, help="the server's public key (server.pub)")
    agent.add_argument("--timeout", type=float, help="seconds for every network step")
    server = parser.add_argument_group("the management server (steps 8-10)")
    server.add_argument("--server-url", help="the server's URL (default: sync.url)")
    server.add_argument("--api-token", help=f"an API token (or {API_TOKEN_ENV}): the server "
                                            "then sends a test command")
    server.add_argument("--push-timeout", type=float, default=10.0,
                        help="seconds to wait for the test command (default 10)")
    side = parser.add_argument_group("epns-check --server, on the broker's host")
    side.add_argument("--server", action="store_true", help="check the server side")
    side.add_argument("--broker-config", type=Path,
                      help="broker.toml (default: [broker] config of server.toml)")
    return parser


_PATHS = {"ca": "BROKER__CA", "cert": "IDENTITY__CERT", "key": "IDENTITY__KEY",
          "token_file": "IDENTITY__TOKEN_FILE", "server_key": "BROKER__SERVER_PUBLIC_KEY"}
_VALUES = {"agent_id": "IDENTITY__AGENT_ID", "host": "BROKER__HOST", "proxy": "PROXY__URL"}
_TIMEOUTS = ("TCP_CONNECT", "PROXY_CONNECT", "TLS_HANDSHAKE", "CONNACK")


def _flag_env(args: argparse.Namespace) -> dict[str, str]:
    """Flags as ``EPNS_AGENT_*`` variables, which the agent's loader puts over
    its file: one loader, so the check sees exactly what the agent sees."""
    env: dict[str, str] = {}
    for name, key in _VALUES.items():
        if getattr(args, name) is not None:
            env[ENV_PREFIX + key] = getattr(args, name)
    # Flags are relative to where the check runs, not to agent.toml.
    for name, key in _PATHS.items():
        if getattr(args, name) is not None:
            env[ENV_PREFIX + key] = str(getattr(args, name).absolute())
    if args.token_file is not None and args.cert is None:
        env[ENV_PREFIX + "IDENTITY__CERT"] = env[ENV_PREFIX + "IDENTITY__KEY"] = ""
    if args.proxy is not None:
        env[ENV_PREFIX + "PROXY__USE_ENV"] = "false"
    if args.port:
        env[ENV_PREFIX + "BROKER__PORTS"] = ",".join(map(str, args.port))
    if args.timeout is not None:
        env.update({f"{ENV_PREFIX}TIMEOUTS__{key}": str(args.timeout) for key in _TIMEOUTS})
    return env


def agent_settings(args: argparse.Namespace, env: Mapping[str, str]) -> AgentSettings:
    """The agent's settings with the flags over them; ConfigError if unusable."""
    return load_agent_settings(args.config, {**env, **_flag_env(args)})


def _config_error(source: str, exc: ConfigError) -> Report:
    result = Result(Step.CONFIG, source, Finding(
        Status.FAIL, str(exc), "fix the setting it names (docs/troubleshooting.md, step 1)"))
    return Report("epns-check", (result,), Verdict(EXIT_CONFIG, "the configuration is unusable"))


def _agent_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Report:
    source = str(args.config) if args.config else "command line"
    options = CheckOptions(route=args.route, server_url=args.server_url,
                           api_token=args.api_token or os.environ.get(API_TOKEN_ENV),
                           push_timeout=args.push_timeout, no_takeover=args.no_takeover)
    try:
        settings = agent_settings(args, os.environ)
        check = AgentCheck(settings, options, source)
    except ConfigError as exc:
        return _config_error(source, exc)
    if args.server_url is not None and not args.server_url.startswith(("https://", "http://")):
        parser.error(f"--server-url {args.server_url}: give the server's https:// URL")
    if args.route is not None and not check.routes():
        known = [r.name for r in AgentCheck(settings, CheckOptions(), source).routes()]
        parser.error(f"--route {args.route}: this agent's routes are {', '.join(known)}")
    return check.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``epns-check``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.server:
        report = ServerCheck(args.config, args.broker_config, os.environ).run()
    else:
        report = _agent_report(args, parser)
    if args.json:
        checked_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        sys.stdout.write(render.as_json(report, epns_version=__version__,
                                        checked_at=checked_at) + "\n")
    elif sys.stdout.isatty():
        render.table(report, sys.stdout)
    else:
        sys.stdout.write(render.plain(report))
    sys.stdout.flush()
    return report.verdict.exit_code
