"""``epns-server backup`` and ``restore`` with real processes: a server and
its embedded broker, backed up while wake-ups flow, stopped, its directory
deleted, restored elsewhere and started on the same ports; the same agent
processes (never enrolled again) reconnect with their identities and satisfy
a new wake-up, and the history is there. And the refusals: a wrong
passphrase, a flipped byte, a newer schema, a directory that is not empty."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from epns import pki
from epns.server_config import load_server_settings
from server_push.store import db
from tests.support.agents import AgentProcess, start_agent, write_agent_config
from tests.support.processes import ROOT, broker_env, free_port, pump_stderr
from tests.support.server import ServerProcess, request_wakeup, server_env, start_server

PASSPHRASE = "correct horse battery staple"
# Several epns-server processes in one test, each spending a second on
# scrypt, on a loaded machine: beyond the default 120 s now and then.
SLOW = pytest.mark.timeout(240)


def _cli(env: dict[str, str], *args: str, passphrase: str = PASSPHRASE
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server_push", *args], cwd=ROOT,
                          env={**env, "EPNS_BACKUP_PASSPHRASE": passphrase},
                          capture_output=True, text=True, timeout=120, check=False)


def _embedded(certs: Path, work: Path, primary: int, fallback: int,
              **overrides: str) -> ServerProcess:
    """A server with its embedded broker on ``primary`` and ``fallback``."""
    env = broker_env(certs, listeners__primary__port=str(primary),
                     listeners__fallback__port=str(fallback))
    extra = {k: v for k, v in env.items() if k.startswith("EPNS_BROKER_")}
    extra.update({f"EPNS_SERVER_{k.upper()}": v for k, v in overrides.items()})
    server = start_server(certs, work, primary, broker__enabled="true", extra_env=extra)
    server.log_contains(r"broker_link_up", timeout=20)
    return server


# Settings that name files: a restored server takes them from its server.toml.
_PATHS = ("PKI__DIR", "DATABASE__URL", "CONSOLE__SECRETS_FILE", "STATE_DIR", "HTTP__CERT",
          "HTTP__KEY", "HTTP__CLIENT_CA", "MQTT__CA", "MQTT__CERT", "MQTT__KEY", "TLS__CERT",
          "TLS__KEY", "TLS__CA", "IDENTITY__SERVER_PUBLIC_KEY", "IDENTITY__REVOCATION_FILE")


def _run_in(restored: Path, primary: int, fallback: int, http_port: int,
            **overrides: str) -> ServerProcess:
    """``cd DIR && epns-server --config server.toml run``, as docs/backup.md
    says, with its embedded broker: every file from the restored layout
    (the server's paths from server.toml, the broker's defaults relative to
    DIR); only the test's addresses and ports come from the environment."""
    env = {**broker_env(restored, listeners__primary__port=str(primary),
                        listeners__fallback__port=str(fallback)),
           **server_env(restored, restored, primary, http_port, broker__enabled="true",
                        **overrides)}
    env = {k: v for k, v in env.items()
           if not k.removeprefix("EPNS_SERVER_").removeprefix("EPNS_BROKER_").startswith(_PATHS)}
    process = subprocess.Popen([sys.executable, "-m", "server_push", "--config", "server.toml",
                                "run"], cwd=restored, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(process, f"https://127.0.0.1:{http_port}", env,
                           restored / "certs" / pki.CA_CERT)
    process.stderr = process.stdout
    threading.Thread(target=pump_stderr, args=(process, server.lines), daemon=True).start()
    try:
        server.log_contains(r"broker_link_up", timeout=40)
    except AssertionError:
        server.stop()
        raise
    return server


def _agent(api: httpx.Client, home: Path, agent_id: str, auth: str, server: ServerProcess,
           port: int) -> AgentProcess:
    """Create the agent through the API, keep its bundle in ``home`` (away
    from the server's directory) and start it on the bundle alone."""
    answer = api.post("/api/v1/agents", json={"id": agent_id, "auth": auth})
    assert answer.status_code == 201, answer.text
    bundle = home / agent_id
    bundle.mkdir(parents=True)
    for name, text in answer.json()["files"].items():
        (bundle / name).write_text(text)
    identity: dict[str, Any] = (
        {"cert": str(bundle / "agent.crt"), "key": str(bundle / "agent.key")}
        if auth == "certificate" else
        {"cert": None, "key": None, "token_file": str(bundle / "agent.token")})
    config = write_agent_config(
        home / f"{agent_id}.toml", bundle, agent_id, [port], identity=identity,
        broker={"ca": str(bundle / "ca.crt"), "server_public_key": str(bundle / "server.pub")},
        sync={"action": "http", "url": server.url, "fetch": True, "ca": str(bundle / "ca.crt")})
    return start_agent(config)


def _wait(api: httpx.Client, path: str, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        try:
            answer = api.get(path)
        except httpx.TransportError as exc:
            seen = exc
        else:
            seen = answer.json() if answer.status_code == 200 else answer.text
            if answer.status_code == 200 and check(seen):
                return dict(seen)
        time.sleep(0.2)
    raise AssertionError(f"{path} never satisfied the check: {seen}")


def _satisfied(api: httpx.Client, wakeup_id: str) -> dict[str, Any]:
    return _wait(api, f"/api/v1/wakeups/{wakeup_id}",
                 lambda w: w["counts"].get("satisfied", 0) >= 1)


@pytest.mark.timeout(300)
def test_restored_server_takes_back_its_agents(tmp_path: Path) -> None:
    original = tmp_path / "original"
    certs, work = original / "certs", original / "state"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    work.mkdir()
    primary, fallback = free_port(), free_port()
    # The waker below asks faster than a caller's default wake-up budget.
    limits = {"wakeups__per_minute": "6000", "wakeups__burst": "1000"}
    server = _embedded(certs, work, primary, fallback, **limits)
    http_port = int(server.url.rsplit(":", 1)[1])
    agents: list[AgentProcess] = []
    try:
        token = server.cli("token", "create", "tests").strip()
        home = tmp_path / "machines"
        with server.client(token) as api:
            agents += [_agent(api, home, "pc-cert", "certificate", server, primary),
                       _agent(api, home, "pc-token", "token", server, primary)]
            history = []
            for agent_id in ("pc-cert", "pc-token"):
                _wait(api, f"/api/v1/agents/{agent_id}", lambda a: a["presence"] == "online")
                history.append(request_wakeup(api, agent_id))
                _satisfied(api, history[-1])
        identities = {p: p.read_bytes() for p in home.rglob("agent.*")}

        # Wake-ups flow while the backup is taken.
        flowing = threading.Event()
        during: list[str] = []

        def wake_in_a_loop() -> None:
            with server.client(token) as api:
                for _ in range(200):
                    during.append(request_wakeup(api, "pc-cert"))
                    if flowing.is_set():
                        return
                    time.sleep(0.1)

        waker = threading.Thread(target=wake_in_a_loop)
        waker.start()
        out = tmp_path / "epns.backup"
        try:
            made = _cli(server.env, "backup", "--out", str(out))
        finally:
            flowing.set()
            waker.join(30)
        assert made.returncode == 0, made.stderr
        assert "schema revision " + db.schema_revisions()[-1] in made.stdout
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert during, "no wake-up was requested while the backup ran"
        assert PASSPHRASE.encode() not in out.read_bytes()
        assert b"BEGIN PRIVATE KEY" not in out.read_bytes()

        connections = [agent.count(r" connected route=") for agent in agents]
        server.stop()
        # Whatever the restored server uses comes from the backup.
        shutil.rmtree(original)
        restored = tmp_path / "restored"
        done = _cli(server_env(certs, work, primary, http_port), "restore", str(out),
                    "--into", str(restored))
        assert done.returncode == 0, done.stderr
        for key in (*(restored / "certs").glob("*.key"), restored / "state" / "server.db"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        settings = load_server_settings(restored / "server.toml", {})
        assert settings.pki.dir == restored / "certs"
        assert settings.database.url == f"sqlite+aiosqlite:///{restored / 'state/server.db'}"
        assert settings.mqtt.cert == restored / "certs" / pki.SERVER_CERT

        server = _run_in(restored, primary, fallback, http_port, **limits)
        with server.client(token) as api:  # the API token is in the restored database
            for agent_id in ("pc-cert", "pc-token"):
                _wait(api, f"/api/v1/agents/{agent_id}", lambda a: a["presence"] == "online",
                      timeout=40)
                _satisfied(api, request_wakeup(api, agent_id))
            for wakeup_id in history:
                assert api.get(f"/api/v1/wakeups/{wakeup_id}").json()["counts"]["satisfied"] == 1
        # The same processes, connected again (not started again, not enrolled again).
        assert all(agent.process.poll() is None for agent in agents)
        assert all(agent.count(r" connected route=") > before
                   for agent, before in zip(agents, connections, strict=True))
        assert {p: p.read_bytes() for p in home.rglob("agent.*")} == identities
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.fixture
def offline(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A server's state (PKI, database at the newest schema, an API token),
    not running, and its backup."""
    certs, work = tmp_path / "certs", tmp_path / "state"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    env = server_env(certs, work, free_port(), free_port())
    assert _cli(env, "token", "create", "tests").returncode == 0
    out = tmp_path / "epns.backup"
    made = _cli(env, "backup", "--out", str(out))
    assert made.returncode == 0, made.stderr
    return env, out


@SLOW
def test_a_wrong_passphrase_or_a_flipped_byte_restores_nothing(
        tmp_path: Path, offline: tuple[dict[str, str], Path]) -> None:
    env, out = offline
    into = tmp_path / "restored"
    wrong = _cli(env, "restore", str(out), "--into", str(into), passphrase="not the passphrase")
    assert wrong.returncode == 2
    assert "wrong passphrase, or the file was changed" in wrong.stderr
    blob = bytearray(out.read_bytes())
    for where in (20, len(blob) // 2, len(blob) - 1):  # the salt, the middle, the tag
        damaged = tmp_path / f"damaged-{where}"
        flipped = bytearray(blob)
        flipped[where] ^= 0x01
        damaged.write_bytes(bytes(flipped))
        refused = _cli(env, "restore", str(damaged), "--into", str(into))
        assert refused.returncode == 2
        assert "does not authenticate" in refused.stderr, refused.stderr
    assert not into.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@SLOW
def test_restore_refuses_a_directory_that_is_not_empty(
        tmp_path: Path, offline: tuple[dict[str, str], Path]) -> None:
    env, out = offline
    into = tmp_path / "busy"
    into.mkdir()
    (into / "keep.txt").write_text("mine")
    refused = _cli(env, "restore", str(out), "--into", str(into))
    assert refused.returncode == 2
    assert "is not empty (keep.txt)" in refused.stderr
    assert sorted(p.name for p in into.iterdir()) == ["keep.txt"]
    forced = _cli(env, "restore", str(out), "--into", str(into), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (into / "keep.txt").read_text() == "mine"
    assert (into / "certs" / pki.CA_KEY).read_bytes() == (
        Path(env["EPNS_SERVER_PKI__DIR"]) / pki.CA_KEY).read_bytes()


def _in(restored: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``epns-server ARGS`` on a restored directory's own server.toml."""
    env = {k: v for k, v in server_env(restored, restored, 0, 0).items()
           if not k.startswith("EPNS_SERVER_")}
    return _cli(env, "--config", str(restored / "server.toml"), *args)


def _backup_of(restored: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return _in(restored, "backup", "--out", str(out))


@SLOW
def test_a_backup_from_a_newer_schema_is_refused_naming_both(
        tmp_path: Path, offline: tuple[dict[str, str], Path]) -> None:
    env, out = offline
    restored = tmp_path / "restored"
    assert _cli(env, "restore", str(out), "--into", str(restored)).returncode == 0
    with sqlite3.connect(restored / "state" / "server.db") as database:
        database.execute("UPDATE alembic_version SET version_num = '9999'")
    # What an older server does with a database a newer one migrated: it says so.
    older = _in(restored, "token", "create", "later")
    assert older.returncode == 2
    assert "schema revision 9999, newer than this epns knows" in older.stderr, older.stderr
    newer = tmp_path / "newer.backup"
    assert _backup_of(restored, newer).returncode == 0
    into = tmp_path / "again"
    refused = _cli(env, "restore", str(newer), "--into", str(into))
    assert refused.returncode == 2
    assert "schema revision 9999" in refused.stderr
    assert f"knows revisions up to {db.schema_revisions()[-1]}" in refused.stderr
    assert not into.exists()


@SLOW
def test_an_older_backup_is_migrated_forward(tmp_path: Path) -> None:
    known = db.schema_revisions()
    restored = tmp_path / "old"
    pki.init_dev_pki(restored / "certs", ("localhost", "127.0.0.1"))
    (restored / "state").mkdir()
    engine = create_engine(f"sqlite:///{restored / 'state' / 'server.db'}")
    with engine.begin() as connection:
        # An older server's database: the migrations up to the one before the newest.
        config = Config()
        config.set_main_option("script_location", str(db.MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, known[-2])
    engine.dispose()
    (restored / "server.toml").write_text(
        'state_dir = "state"\n[pki]\ndir = "certs"\n'
        '[database]\nurl = "sqlite+aiosqlite:///state/server.db"\n')
    old = tmp_path / "old.backup"
    made = _backup_of(restored, old)
    assert made.returncode == 0, made.stderr
    assert f"schema revision {known[-2]}" in made.stdout
    into = tmp_path / "new"
    done = _cli({}, "restore", str(old), "--into", str(into))
    assert done.returncode == 0, done.stderr
    assert f"migrated from schema revision {known[-2]} to {known[-1]}" in done.stdout
    with sqlite3.connect(into / "state" / "server.db") as database:
        assert database.execute("SELECT version_num FROM alembic_version").fetchone() == (
            known[-1],)


@SLOW
def test_with_postgresql_the_files_are_backed_up_and_pg_dump_named(tmp_path: Path) -> None:
    """No database is copied (pg_dump's work); the PKI and secrets are, and
    both commands say so. The database is never connected to."""
    certs, work = tmp_path / "certs", tmp_path / "state"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    env = server_env(certs, work, free_port(), free_port(),
                     database__url="postgresql+asyncpg://epns@127.0.0.1:1/epns")
    out = tmp_path / "files.backup"
    made = _cli(env, "backup", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "PostgreSQL, NOT in this backup" in made.stdout
    assert "pg_dump" in made.stdout
    into = tmp_path / "restored"
    done = _cli(env, "restore", str(out), "--into", str(into))
    assert done.returncode == 0, done.stderr
    assert "pg_restore" in done.stdout
    assert not (into / "state" / "server.db").exists()
    assert (into / "certs" / pki.SIGNING_KEY).read_bytes() == (certs / pki.SIGNING_KEY).read_bytes()
    assert "database" not in (into / "server.toml").read_text()
