"""The one-line installer, run for real with ``sh`` against the real server on
loopback: the command ``POST /api/v1/enrol-tokens`` answers, run as it is
(less ``sudo``), with ``EPNS_INSTALL_ROOT`` pointing the install at a
temporary directory instead of ``/`` (the script's documented test switch:
the single-file agent only, no service started). The installed file then
runs as the agent, comes online and satisfies a wake-up.

The package is a single-file agent the test builds with ``zipapp`` from
this checkout (the release's shiv-built ``.pyz`` bundles the dependencies
too; here they come from the test's interpreter, first on PATH as python3):
quick, and no build. tests/packaging/test_installer_deb.py runs the same
command with the release's ``.deb`` and ``.pyz`` in a throwaway root.
A wrong pinned fingerprint, and an impostor server, stop the command before
anything it fetched runs."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import zipapp
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from epns import machine, pki
from tests.server.conftest import Stack
from tests.support.agents import AgentProcess
from tests.support.processes import ROOT, pump_stderr

PYZ = "epns-agent-0.0.test.pyz"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packages directory with a single-file agent built from this checkout."""
    stage = tmp_path_factory.mktemp("pyz-stage")
    for package in ("epns", "agent_push"):
        shutil.copytree(ROOT / package, stage / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("packages")
    zipapp.create_archive(stage, out / PYZ, interpreter="/usr/bin/env python3",
                          main="agent_push.cli:main")
    return out


def _env(root: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPNS_")}
    # python3 is the test's interpreter, which has the agent's dependencies.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    if root is not None:
        env["EPNS_INSTALL_ROOT"] = str(root)
    return env


def _run(command: str, root: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert command.startswith("sudo sh -c ")
    # As root already; sudo would also drop EPNS_INSTALL_ROOT.
    return subprocess.run(shlex.split(command)[1:], env=_env(root), cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _start_installed(binary: Path, config: Path) -> AgentProcess:
    process = subprocess.Popen([str(binary), "run", "--config", str(config)],
                               cwd=config.parent, env=_env(None), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    agent = AgentProcess(process, config)
    threading.Thread(target=pump_stderr, args=(process, agent.lines), daemon=True).start()
    return agent


@pytest.fixture
def installing(make_stack: Callable[..., Stack], packages: Path) -> Stack:
    """A stack whose server offers the single-file agent."""
    return make_stack(enrol__packages_dir=str(packages))


@pytest.mark.timeout(180)
def test_the_one_line_installer_installs_enrols_and_the_agent_answers(
        installing: Stack, packages: Path, tmp_path: Path) -> None:
    stack = installing
    made = stack.enrol_token(max_uses=None, groups=["fleet"])
    ca = (stack.pki / pki.CA_CERT).read_bytes()
    assert made["ca_fingerprint"] == hashlib.sha256(ca).hexdigest()
    assert made["ca_fingerprint"] in made["install_command"]
    root = tmp_path / "root"
    done = _run(made["install_command"], root, tmp_path)
    assert done.returncode == 0, done.stderr
    binary = root / "usr/local/bin/epns-agent"
    assert binary.read_bytes() == (packages / PYZ).read_bytes()
    assert binary.stat().st_mode & 0o777 == 0o755
    conf = root / "etc/epns"
    assert sorted(p.name for p in conf.iterdir()) == [
        "agent.crt", "agent.key", "agent.toml", "ca.crt", "server.pub"]
    assert (conf / "agent.key").stat().st_mode & 0o777 == 0o600
    # No --id: the id is this machine's host name.
    agent_id = machine.agent_id_from_hostname(socket.gethostname())
    assert f"enrolled as {agent_id}" in done.stdout
    assert "no service started" in done.stderr
    with stack.api() as api:
        enrolled = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["enrolments"]
    assert [(e["agent_id"], e["hostname"]) for e in enrolled] == [(agent_id,
                                                                   socket.gethostname())]

    agent = _start_installed(binary, conf / "agent.toml")
    stack.agents.append(agent)
    stack.wait_agent(agent_id, "online")
    stack.wait_wakeup(stack.wake(agent_id), "satisfied")

    # Run again (an upgrade): the package is replaced, the identity kept.
    again = _run(made["install_command"], root, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "enrolled already" in again.stderr
    with stack.api() as api:
        assert api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["uses"] == 1
    assert agent.stop(signal.SIGTERM) == 0


def test_a_wrong_pinned_fingerprint_stops_before_anything_runs(installing: Stack,
                                                               tmp_path: Path) -> None:
    stack = installing
    made = stack.enrol_token()
    wrong = made["install_command"].replace(made["ca_fingerprint"], "0" * 64)
    root = tmp_path / "root"
    done = _run(wrong, root, tmp_path)
    assert done.returncode == 1
    assert "is not the pinned one: stopped, nothing installed" in done.stderr
    assert not root.exists()
    with stack.api() as api:
        token = api.get(f"/api/v1/enrol-tokens/{made['id']}").json()
    assert (token["uses"], token["enrolments"]) == (0, [])


class _Impostor(BaseHTTPRequestHandler):
    """Serves its own CA and a script that would leave a mark if it ever ran."""

    asked: list[str]
    ca: bytes
    mark: Path

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = self.ca if self.path == "/install/ca.crt" else (
            f"#!/bin/sh\ntouch {self.mark}\n".encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    """An HTTPS server on loopback with a CA of its own: a machine in the
    middle of the first contact. Yields its URL, the paths asked, the mark."""
    pair = pki.create_ca(tmp_path / "impostor")
    certs = tmp_path / "impostor"
    broker = pki.create_broker_cert(pair, certs, ("127.0.0.1", "localhost"))
    handler = type("Handler", (_Impostor,), {"asked": [], "ca": pair.cert.read_bytes(),
                                             "mark": tmp_path / "ran"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(broker.cert, broker.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", handler.asked, handler.mark
    server.shutdown()
    server.server_close()


def test_an_impostor_on_the_first_contact_gets_nothing_run(
        installing: Stack, impostor: tuple[str, list[str], Path], tmp_path: Path) -> None:
    stack = installing
    made = stack.enrol_token()
    url, asked, mark = impostor
    hijacked = made["install_command"].replace(stack.server.url, url)
    root = tmp_path / "root"
    done = _run(hijacked, root, tmp_path)
    assert done.returncode == 1
    assert "not the pinned one" in done.stderr
    # It fetched the CA, found it was not the pinned one, and stopped there.
    assert asked == ["/install/ca.crt"]
    assert not mark.exists()
    assert not root.exists()


def test_without_packages_no_installer_is_offered(stack: Stack) -> None:
    made = stack.enrol_token()
    assert made["install_command"] is None
    assert made["enrol_command"].startswith(f"epns-agent enrol --server {stack.server.url} ")
    with stack.server.client() as client:
        script = client.get("/install/linux.sh")
        package = client.get(f"/install/packages/{PYZ}")
        ca = client.get("/install/ca.crt")
    assert script.status_code == 404
    assert script.json()["error"]["code"] == "no_installer"
    assert "packages_dir" in script.json()["error"]["message"]
    assert package.status_code == 404
    assert ca.content == (stack.pki / pki.CA_CERT).read_bytes()
    shown = subprocess.run([sys.executable, "-m", "server_push", "enrol-token", "create"],
                           cwd=ROOT, env=stack.server.env, capture_output=True, text=True,
                           timeout=60, check=True)
    assert "No one-line installer: this server offers no agent installer" in shown.stderr
