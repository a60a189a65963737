"""``python -m bench COMMAND [OPTIONS]``: the one entry point of the benchmarks.

Each command is a module with a ``main(argv, prog)`` that parses its own
options (``python -m bench COMMAND --help``). Modules are imported only when
their command runs: the suite's plots need matplotlib (the ``bench`` extra),
the other commands do not.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one line for --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "suite": ("bench.suite", "every scenario of issue 6, epns broker and Mosquitto in one run"),
    "hold": ("bench.scenarios.hold", "N idle TLS agents: RSS per connection, connect cost"),
    "one-port": ("bench.scenarios.one_port",
                 "held agents on the primary listener vs the one-port listener (443)"),
    "end-to-end": ("bench.scenarios.end_to_end",
                   "API call to the agents' sync through the all-in-one server (scenario 6)"),
    "agent-idle": ("bench.scenarios.agent_idle",
                   "one real epns-agent idle: RSS, CPU, bytes on its socket"),
    "wake-agents": ("bench.scenarios.wake_agents",
                    "N real agents woken at once: request to satisfied per agent"),
    "sync-latency": ("bench.scenarios.sync_latency",
                     "what one HTTP sync costs the agent: wall time and CPU"),
    "tls-memory": ("bench.scenarios.tls_memory",
                   "RSS per TLS connection without amqtt, uvloop and asyncio"),
    "ssl-read-chunk": ("bench.scenarios.ssl_read_chunk",
                       "RSS of a kept TLS read chunk, as read and copied"),
    "handshake-exhaustion": ("bench.scenarios.handshake_exhaustion",
                             "RSS after thousands of TLS handshakes left hanging"),
    "console-agents": ("bench.scenarios.console_agents",
                       "the console's agents page in Chromium: 10,000 agents, 1,000 online"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's module with the rest of the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        # The command's own parser reads the rest, --help included.
        commands.add_parser(name, help=summary, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    code: int = module.main(rest, prog=f"{parser.prog} {args.command}")
    return code


if __name__ == "__main__":
    sys.exit(main())
