"""A real management server process (``python -m server_push run``) on an
ephemeral loopback port, against a broker the test started."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from server_push.security.auth import Credentials
from tests.support.processes import ROOT, free_port, pump_stderr, stop_process, wait_for_line


@dataclass
class ServerProcess:
    """A running server; ``url`` is its HTTPS base URL."""

    process: subprocess.Popen[str]
    url: str
    env: dict[str, str]
    ca: Path
    lines: list[str] = field(default_factory=list)

    def log_contains(self, pattern: str, timeout: float = 10.0, after: int = 0) -> str:
        """Wait for a log line (from index ``after``) matching ``pattern``."""
        return wait_for_line(self.lines, pattern, timeout, after=after, what="server")

    def client(self, token: str | None = None, **options: Any) -> httpx.Client:
        """An HTTPS client that trusts the fleet CA, with a bearer token if given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        context = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=context, headers=headers, timeout=15,
                            **options)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run ``epns-server ARGS`` on this server's settings (plus ``env``); its stdout."""
        done = subprocess.run([sys.executable, "-m", "server_push", *args], cwd=ROOT,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"epns-server {' '.join(args)} failed ({done.returncode}):\n"
                                 + done.stderr)
        return done.stdout

    def api_token(self, name: str = "tests") -> str:
        """A new API token, made as ``epns-server token create NAME`` makes it
        (the server's own ``Credentials``) but in this process: a CLI run is a
        Python start that imports the whole server, about 2 s per stack.
        ``test_fleet_cli`` and ``test_backup_restore`` run the command itself."""
        async def create() -> str:
            engine = create_async_engine(self.env["EPNS_SERVER_DATABASE__URL"])
            try:
                _, token = await Credentials(async_sessionmaker(engine)).create_token(name, "cli")
            finally:
                await engine.dispose()
            return token

        # A thread of its own: a Playwright test's thread already runs an event loop.
        with ThreadPoolExecutor(1) as apart:
            return apart.submit(asyncio.run, create()).result()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.process, sig)


def request_wakeup(api: httpx.Client, agent_id: str) -> str:
    """Ask the API to wake one agent; the wake-up's id."""
    answer = api.post("/api/v1/wakeups", json={"agents": [agent_id]})
    assert answer.status_code == 202, answer.text
    wakeup_id: str = answer.json()["id"]
    return wakeup_id


def server_env(pki: Path, work: Path, mqtt_port: int, http_port: int,
               **overrides: str) -> dict[str, str]:
    """The environment of a test server: its own database and state in ``work``,
    the test's PKI, no embedded broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPNS_")}
    env.update({
        "EPNS_SERVER_HTTP__HOST": "127.0.0.1",
        "EPNS_SERVER_HTTP__PORT": str(http_port),
        "EPNS_SERVER_HTTP__CERT": str(pki / "broker.crt"),
        "EPNS_SERVER_HTTP__KEY": str(pki / "broker.key"),
        "EPNS_SERVER_HTTP__CLIENT_CA": str(pki / "ca.crt"),
        "EPNS_SERVER_HTTP__PUBLIC_URL": f"https://127.0.0.1:{http_port}",
        "EPNS_SERVER_MQTT__HOST": "127.0.0.1",
        "EPNS_SERVER_MQTT__PORT": str(mqtt_port),
        "EPNS_SERVER_MQTT__CA": str(pki / "ca.crt"),
        "EPNS_SERVER_MQTT__CERT": str(pki / "server.crt"),
        "EPNS_SERVER_MQTT__KEY": str(pki / "server.key"),
        "EPNS_SERVER_MQTT__AGENT_HOST": "127.0.0.1",
        "EPNS_SERVER_MQTT__AGENT_PORTS": str(mqtt_port),
        "EPNS_SERVER_BROKER__ENABLED": "false",
        "EPNS_SERVER_PKI__DIR": str(pki),
        "EPNS_SERVER_DATABASE__URL": f"sqlite+aiosqlite:///{work / 'server.db'}",
        "EPNS_SERVER_CONSOLE__SECRETS_FILE": str(work / "secrets.json"),
        "EPNS_SERVER_STATE_DIR": str(work),
        "EPNS_SERVER_WAKEUPS__SWEEP_INTERVAL": "0.5",
        # Whatever a test (or the API fuzzer) stores on the settings page, the
        # server's own magic packets never leave this machine.
        "EPNS_SERVER_WOL__ALLOWED_NETWORKS": "127.0.0.0/8",
    })
    env.update({f"EPNS_SERVER_{k.upper()}": v for k, v in overrides.items()})
    return env


def start_server(pki: Path, work: Path, mqtt_port: int, *, http_port: int | None = None,
                 extra_env: dict[str, str] | None = None, command: list[str] | None = None,
                 **overrides: str) -> ServerProcess:
    """Start ``python -m server_push run`` (or ``command``, an installed
    epns-server, and ``run``) and wait until it serves; ``extra_env`` adds
    variables as they are (an embedded broker's)."""
    port = http_port or free_port()
    env = {**server_env(pki, work, mqtt_port, port, **overrides), **(extra_env or {})}
    argv = [*command, "run"] if command else [sys.executable, "-m", "server_push", "run"]
    process = subprocess.Popen(argv, cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(process, f"https://127.0.0.1:{port}", env, pki / "ca.crt")
    # stdout carries the welcome text and stderr the log: one stream, in order.
    process.stderr = process.stdout
    threading.Thread(target=pump_stderr, args=(process, server.lines), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(" ready url=" in line for line in list(server.lines)):
            return server
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop_process(process, signal.SIGKILL)
    raise RuntimeError("epns server did not start:\n" + "\n".join(server.lines))
