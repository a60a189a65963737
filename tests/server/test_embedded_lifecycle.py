"""The embedded broker never outlives the server that started it: not after
SIGTERM, not after SIGKILL, and a broker an earlier server left behind is
named and stopped by the next start instead of failing it."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from epns import pki
from server_push.embedded import PIDFILE
from tests.support.processes import broker_env, free_port, start_epns
from tests.support.server import ServerProcess, start_server


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has no cmdline, and counts as gone)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _embedded(tmp_path: Path, name: str, primary: int, fallback: int) -> ServerProcess:
    certs = tmp_path / "pki"
    if not certs.exists():
        pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    env = broker_env(certs, listeners__primary__port=str(primary),
                     listeners__fallback__port=str(fallback))
    server = start_server(certs, work, primary, broker__enabled="true",
                          extra_env={k: v for k, v in env.items() if k.startswith("EPNS_BROKER_")})
    server.log_contains(r"broker_link_up", timeout=20)
    return server


def _broker_pid(server: ServerProcess) -> int:
    pid = int((Path(server.env["EPNS_SERVER_STATE_DIR"]) / PIDFILE).read_text())
    assert _alive(pid)
    assert b"broker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_broker_survives_its_server(tmp_path: Path, sig: signal.Signals) -> None:
    primary, fallback = free_port(), free_port()
    server = _embedded(tmp_path, "first", primary, fallback)
    broker = _broker_pid(server)
    server.stop(sig)
    assert _gone_within(broker, 15), f"broker {broker} outlived its server ({sig.name})"
    # The ports are free again: the next server on them starts and links.
    again = _embedded(tmp_path, "second", primary, fallback)
    again.stop()


def test_a_broker_left_behind_is_named_and_stopped_by_the_next_start(tmp_path: Path) -> None:
    """What an orphan from before this fix (or from a platform without
    PR_SET_PDEATHSIG) looks like: a broker holding the ports, its pid in the
    pidfile."""
    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    primary, fallback = free_port(), free_port()
    orphan = start_epns(certs, listeners__primary__port=str(primary),
                        listeners__fallback__port=str(fallback))
    work = tmp_path / "next"
    work.mkdir()
    (work / PIDFILE).write_text(f"{orphan.process.pid}\n")
    try:
        server = _embedded(tmp_path, "next", primary, fallback)
        server.log_contains(rf"stale_broker pid={orphan.process.pid} ")
        assert orphan.process.wait(timeout=15) is not None
        assert _broker_pid(server) != orphan.process.pid
        server.stop()
    finally:
        orphan.stop()


def test_a_pidfile_naming_some_other_process_is_left_alone(tmp_path: Path) -> None:
    work = tmp_path / "mine"
    work.mkdir()
    (work / PIDFILE).write_text(f"{os.getpid()}\n")
    server = _embedded(tmp_path, "mine", free_port(), free_port())
    assert not any("stale_broker" in line for line in server.lines)
    assert _alive(os.getpid())
    server.stop()


def test_a_taken_port_is_a_message_and_the_rest_is_served(tmp_path: Path) -> None:
    """A web server already holds the fallback port (443 on many RMM hosts):
    the broker serves the primary, says which port is taken and which setting
    moves it, and is not restarted in a loop; the server's API comes up."""
    primary, fallback = free_port(), free_port()
    squatter = socket.create_server(("127.0.0.1", fallback))
    try:
        server = _embedded(tmp_path, "taken", primary, fallback)
        line = server.log_contains(r"listener_unavailable listener=fallback")
        assert f"127.0.0.1:{fallback}" in line
        assert "EPNS_BROKER_LISTENERS__FALLBACK__PORT" in line
        time.sleep(3)
        assert sum("broker_started" in entry for entry in server.lines) == 1
        with server.client() as api:
            assert api.get("/api/v1/health").json()["broker"] is True
        server.stop()
    finally:
        squatter.close()


def test_a_broker_that_cannot_listen_at_all_is_not_restarted(tmp_path: Path) -> None:
    primary, fallback = free_port(), free_port()
    squatters = [socket.create_server(("127.0.0.1", port)) for port in (primary, fallback)]
    try:
        certs = tmp_path / "pki"
        pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
        work = tmp_path / "none"
        work.mkdir()
        env = broker_env(certs, listeners__primary__port=str(primary),
                         listeners__fallback__port=str(fallback))
        began = time.monotonic()
        server = start_server(certs, work, primary, broker__enabled="true",
                              extra_env={k: v for k, v in env.items()
                                         if k.startswith("EPNS_BROKER_")})
        # Ready at once, not after the broker's 30 s readiness wait.
        assert time.monotonic() - began < 20
        line = server.log_contains(r"broker_cannot_start ")
        assert "not restarted" in line
        time.sleep(3)
        assert sum("broker_started" in entry for entry in server.lines) == 1
        with server.client() as api:
            health = api.get("/api/v1/health").json()
        assert health["broker"] is False
        assert health["status"] == "ok"
        server.stop()
    finally:
        for squatter in squatters:
            squatter.close()
