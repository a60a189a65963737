"""``epns-certs``: make the development PKI, agent certificates and tokens.

    epns-certs init [--dir certs] [--name HOST ...]   CA, broker cert, server cert, signing key
    epns-certs agent AGENT_ID [--dir certs]            a client certificate for one agent
    epns-certs token AGENT_ID [--dir certs] [--ttl S]  a signed token (prints it)
    epns-certs revoke AGENT_ID [--dir certs]           add the agent to the revocation list
    epns-certs nats-accounts [AGENT_ID ...] [--file F] the fleet as a NATS accounts block
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from epns import nats_config, pki, tokens
from epns.errors import EPNSError


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _default_names() -> tuple[str, ...]:
    return ("localhost", socket.gethostname(), "127.0.0.1", "::1")


def _cmd_init(args: argparse.Namespace) -> None:
    names = tuple(dict.fromkeys(args.name or _default_names()))
    pki.init_dev_pki(args.dir, names)
    _say(f"dev PKI in {args.dir}/ (broker names: {', '.join(names)})")


def _ca(directory: Path) -> pki.Pair:
    ca = pki.Pair(directory / pki.CA_CERT, directory / pki.CA_KEY)
    if not ca.key.exists():
        raise EPNSError(f"no CA in {directory}: run 'epns-certs init --dir {directory}' first")
    return ca


def _cmd_agent(args: argparse.Namespace) -> None:
    pair = pki.create_client_cert(_ca(args.dir), pki.agent_pair(args.dir, args.agent_id),
                                  args.agent_id)
    _say(f"{pair.cert}\n{pair.key}")


def _cmd_token(args: argparse.Namespace) -> None:
    key = pki.load_signing_key(args.dir / pki.SIGNING_KEY)
    _say(tokens.sign_token(key, args.agent_id, now=time.time(), ttl=args.ttl))


def _cmd_revoke(args: argparse.Namespace) -> None:
    path = args.dir / pki.REVOKED
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"agent:{args.agent_id}\n")
    _say(f"{args.agent_id} added to {path}")


def _cmd_nats_accounts(args: argparse.Namespace) -> None:
    ids = list(args.agent_ids)
    if args.file is not None:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    sys.stdout.write(nats_config.render_accounts(ids))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``epns-certs``."""
    parser = argparse.ArgumentParser(prog="epns-certs", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("certs"), help="PKI directory")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the dev PKI (keeps what exists)")
    init.add_argument("--name", action="append", help="broker DNS name or IP (repeatable)")
    init.set_defaults(run=_cmd_init)
    for name, run, text in (("agent", _cmd_agent, "issue an agent client certificate"),
                            ("token", _cmd_token, "issue an agent token"),
                            ("revoke", _cmd_revoke, "revoke an agent")):
        command = sub.add_parser(name, help=text)
        command.add_argument("agent_id")
        command.set_defaults(run=run)
        if name == "token":
            command.add_argument("--ttl", type=float, default=365 * 86400.0,
                                 help="validity in seconds")
    nats = sub.add_parser("nats-accounts", help="print the NATS accounts block (users and "
                          "permissions) for these agents and the server")
    nats.add_argument("agent_ids", nargs="*", metavar="AGENT_ID")
    nats.add_argument("--file", help="more agent ids, one a line ('-' reads stdin)")
    nats.set_defaults(run=_cmd_nats_accounts)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except EPNSError as exc:
        sys.stderr.write(f"epns-certs: {exc}\n")
        return 2
    return 0
