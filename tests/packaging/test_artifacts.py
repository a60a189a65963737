"""The released artifacts, built once for this module by ``scripts/build-packages``
exactly as a maintainer would (wheels, wheelhouse, .deb, single file), then
installed the ways docs/install-agent.md says and run against a real broker
and server: each agent connects, and syncs with the server after a wake-up.

- the agent wheel into a fresh virtual environment from the local
  wheelhouse only (``--no-index``): no server dependency and no uvloop is
  installed, and ``epns-agent run`` from there works;
- the server wheel's metadata requires the agent's at the same version;
- the .deb into a throwaway root (tests/support/throwaway_root.py: an
  overlay of / in a private mount namespace; never the host's root):
  install, configure, run as the epns user from /usr/bin/epns-agent,
  upgrade (configuration, identity and state kept), remove, purge;
- the single file with the system's /usr/bin/python3 and each later Python
  up to release.build.NEWEST_PYTHON found here, outside any venv; and in a
  throwaway root as systemd/epns-agent.service runs it;
- the server wheel into a fresh venv: its epns-broker and epns-server serve
  an agent from the same venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from epns import __version__, pki
from release.build import NEWEST_PYTHON
from tests.server.conftest import Stack
from tests.support.agents import AgentProcess, write_agent_config
from tests.support.processes import ROOT, pump_stderr, start_epns
from tests.support.server import start_server
from tests.support.throwaway_root import ENV as ROOT_ENV
from tests.support.throwaway_root import ThrowawayRoot, why_not

pytestmark = pytest.mark.timeout(600)

# Distributions an agent install must not bring (issue 16: an operator found
# all of these, and uvloop, installed with the agent).
SERVER_ONLY = {"fastapi", "starlette", "pydantic", "sqlalchemy", "alembic", "uvicorn", "asyncpg",
               "aiosqlite", "aiomqtt", "argon2-cffi", "jinja2", "itsdangerous",
               "python-multipart", "uvloop", "websockets", "epns", "epns-server"}
SYSTEM_PYTHON = Path("/usr/bin/python3")
LIST_DISTRIBUTIONS = ("import json, importlib.metadata as m; print(json.dumps(sorted("
                      "d.metadata['Name'].lower().replace('_', '-') for d in m.distributions())))")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test venv, EPNS_* or proxy settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EPNS_", "VIRTUAL_ENV", "PYTHON", "PIP_"))
           and k.lower() not in ("https_proxy", "no_proxy")}
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep)
                                  if not part.startswith(str(Path(sys.executable).parent)))
    env.update(extra)
    return env


def _start(argv: list[str], config: Path, env: dict[str, str], cwd: Path) -> AgentProcess:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    agent = AgentProcess(process, config)
    threading.Thread(target=pump_stderr, args=(process, agent.lines), daemon=True).start()
    return agent


def _config(stack: Stack, agent_id: str, path: Path, files: Path) -> Path:
    """The agent's TOML as stack.start_agent writes it, naming its identity,
    CA and server key in ``files`` (a bundle's names)."""
    return write_agent_config(
        path, stack.pki, agent_id, [stack.broker.port],
        identity={"cert": str(files / "agent.crt"), "key": str(files / "agent.key")},
        broker={"ca": str(files / "ca.crt"), "server_public_key": str(files / "server.pub")},
        sync={"action": "http", "url": stack.server.url, "fetch": True,
              "ca": str(files / "ca.crt"), "interval": 3600.0, "timeout": 5.0})


def _connects_and_syncs(stack: Stack, agent_id: str, agent: AgentProcess) -> None:
    """Online at the server, then a wake-up through the API that it syncs."""
    try:
        stack.wait_agent(agent_id, "online", timeout=30)
        stack.wait_wakeup(stack.wake(agent_id), "satisfied", timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nagent log:\n" + "\n".join(agent.lines)) from exc


def test_the_wheels_hold_their_own_packages_and_the_server_requires_the_agent(
        dist: Path) -> None:
    agent = dist / f"epns_agent-{__version__}-py3-none-any.whl"
    server = dist / f"epns_server-{__version__}-py3-none-any.whl"

    def tops(wheel: Path) -> set[str]:
        with zipfile.ZipFile(wheel) as archive:
            return {name.split("/")[0] for name in archive.namelist()
                    if ".dist-info/" not in name}

    def metadata(wheel: Path) -> list[str]:
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            return archive.read(name).decode().splitlines()

    assert tops(agent) == {"epns", "agent_push", "epns_check"}
    assert tops(server) == {"broker", "server_push"}
    with zipfile.ZipFile(server) as archive:
        names = archive.namelist()
    assert any(re.match(r"server_push/store/migrations/versions/\d+_.*\.py$", n) for n in names)
    assert any(n.startswith("server_push/web/console/templates/") for n in names)
    requires = [line.split(": ", 1)[1] for line in metadata(server)
                if line.startswith("Requires-Dist: ")]
    assert f"epns-agent=={__version__}" in requires
    agent_requires = {re.split(r"[<>=!~; \[]", line.split(": ", 1)[1])[0].lower()
                      for line in metadata(agent) if line.startswith("Requires-Dist: ")
                      and "extra ==" not in line}
    assert agent_requires
    assert not agent_requires & SERVER_ONLY


def test_agent_wheel_in_a_fresh_venv_brings_no_server_dependency_and_syncs(
        dist: Path, tmp_path: Path, make_stack: Callable[..., Stack]) -> None:
    venv = tmp_path / "venv"
    env = _clean_env(PIP_CONFIG_FILE=os.devnull)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
         str(dist / "wheelhouse"), f"epns-agent=={__version__}"],
        capture_output=True, text=True, timeout=300, env=env, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    # Not from the checkout: its epns.egg-info would be listed.
    listed = subprocess.run([str(python), "-c", LIST_DISTRIBUTIONS], capture_output=True,
                            text=True, timeout=60, env=env, check=True, cwd=tmp_path)
    installed = set(json.loads(listed.stdout))
    assert {"epns-agent", "paho-mqtt", "cryptography", "httpx", "psutil"} <= installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY
    # uvloop cannot sneak in another way either: the agent runs without it.
    assert subprocess.run([str(python), "-c", "import uvloop"], capture_output=True,
                          timeout=60, env=env, check=False, cwd=tmp_path).returncode != 0

    stack = make_stack()
    bundle = stack.create_agent("venv-agent")
    config = _config(stack, "venv-agent", tmp_path / "agent.toml", bundle)
    agent = _start([str(venv / "bin" / "epns-agent"), "run", "--config", str(config)],
                   config, env, tmp_path)
    stack.agents.append(agent)
    _connects_and_syncs(stack, "venv-agent", agent)


def test_server_wheel_from_its_own_venv_serves_an_agent(
        dist: Path, tmp_path: Path) -> None:
    """epns-broker and epns-server installed from the server wheel (the agent
    wheel comes with it, the rest from the index), run as a stack; an agent
    from the same venv connects and syncs after a wake-up."""
    venv = tmp_path / "venv"
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--find-links", str(dist),
         "--find-links", str(dist / "wheelhouse"), f"epns-server=={__version__}"],
        capture_output=True, text=True, timeout=400, env=env, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run([str(venv / "bin" / "python"), "-c", LIST_DISTRIBUTIONS],
                            capture_output=True, text=True, timeout=60, env=env, check=True,
                            cwd=tmp_path)
    installed = set(json.loads(listed.stdout))
    assert {"epns-server", "epns-agent", "fastapi", "sqlalchemy", "uvloop"} <= installed
    assert "epns" not in installed

    certs = tmp_path / "pki"
    pki.init_dev_pki(certs, ("localhost", "127.0.0.1"))
    work = tmp_path / "server"
    work.mkdir()
    broker = start_epns(certs, command=[str(venv / "bin" / "epns-broker")],
                        listeners__fallback__http_upstream=str(work / "front.sock"))
    stack: Stack | None = None
    server = None
    try:
        server = start_server(certs, work, broker.port,
                              command=[str(venv / "bin" / "epns-server")])
        token = subprocess.run([str(venv / "bin" / "epns-server"), "token", "create", "tests"],
                               env=server.env, capture_output=True, text=True, timeout=60,
                               check=True, cwd=tmp_path).stdout.strip()
        stack = Stack(certs, work, broker, server, token)
        bundle = stack.create_agent("server-venv-agent")
        config = _config(stack, "server-venv-agent", tmp_path / "agent.toml", bundle)
        agent = _start([str(venv / "bin" / "epns-agent"), "run", "--config", str(config)],
                       config, env, tmp_path)
        stack.agents.append(agent)
        _connects_and_syncs(stack, "server-venv-agent", agent)
    finally:
        for running in stack.agents if stack else []:
            running.stop()
        if server is not None:
            server.stop()
        broker.stop()


def _interpreter(minor: int) -> Path | None:
    """A Python 3.<minor> on this machine: Debian's first, then one on PATH,
    then pyenv's (whose shims answer only for the selected version)."""
    candidates = [SYSTEM_PYTHON, Path(f"/usr/bin/python3.{minor}")]
    on_path = shutil.which(f"python3.{minor}")
    candidates += [Path(on_path)] if on_path else []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(pyenv.glob(f"versions/3.{minor}.*/bin/python3.{minor}"))
    for candidate in candidates:
        if not candidate.exists():
            continue
        done = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[1])"],
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0 and done.stdout.strip() == str(minor):
            return candidate
    return None


def _system_python_supported() -> str | None:
    """Why the system's python3 cannot run the .deb's agent, or None."""
    for minor in range(sys.version_info.minor, NEWEST_PYTHON + 1):
        if _interpreter(minor) == SYSTEM_PYTHON:
            return None
    return f"{SYSTEM_PYTHON} is missing or not 3.{sys.version_info.minor}-3.{NEWEST_PYTHON}"


@pytest.mark.parametrize("minor", range(sys.version_info.minor, NEWEST_PYTHON + 1))
def test_single_file_runs_with_each_python(minor: int, dist: Path, tmp_path: Path,
                                           make_stack: Callable[..., Stack]) -> None:
    """Outside any venv, with the system's python3 where it is that version."""
    python = _interpreter(minor)
    if python is None:
        pytest.skip(f"no Python 3.{minor} on this machine")
    pyz = dist / f"epns-agent-{__version__}.pyz"
    copied = tmp_path / "epns-agent.pyz"
    shutil.copy2(pyz, copied)
    env = _clean_env(SHIV_ROOT=str(tmp_path / "shiv"))
    done = subprocess.run([str(python), str(copied), "--help"], capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: epns-agent")

    stack = make_stack()
    agent_id = f"onefile-agent-{minor}"
    bundle = stack.create_agent(agent_id)
    config = _config(stack, agent_id, tmp_path / "agent.toml", bundle)
    agent = _start([str(python), str(copied), "run", "--config", str(config)],
                   config, env, tmp_path)
    stack.agents.append(agent)
    _connects_and_syncs(stack, agent_id, agent)


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[tuple[ThrowawayRoot, Path]]:
    """A throwaway root and the host directory it shows at /mnt."""
    reason = why_not() or _system_python_supported()
    if reason:
        pytest.skip(reason)
    carry = tmp_path / "carry"
    carry.mkdir()
    root = ThrowawayRoot(tmp_path / "overlay", carry)
    yield root, carry
    root.close()


def _digests(root: ThrowawayRoot, directory: str) -> dict[str, str]:
    listing = root.run("find", directory, "-type", "f", "-exec", "sha256sum", "{}", "+").stdout
    return {line.split()[1]: line.split()[0] for line in listing.splitlines()}


def _owner_and_mode(root: ThrowawayRoot, path: str) -> str:
    return root.run("stat", "-c", "%U:%G %a", path).stdout.strip()


WANTS = "/etc/systemd/system/multi-user.target.wants/epns-agent.service"
UNIT = "/usr/lib/systemd/system/epns-agent.service"
STATE = "/var/lib/epns-agent"


def _unit_value(lines: list[str], key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


class UnitRun:
    """The agent unit's command, user and environment, to run the agent in
    a throwaway root as systemd would (without its sandbox: no systemd)."""

    def __init__(self, unit_text: str) -> None:
        lines = unit_text.splitlines()
        self.exec_start = shlex.split(_unit_value(lines, "ExecStart")[0])
        self.user = _unit_value(lines, "User")
        self.env = dict(value.split("=", 1) for value in _unit_value(lines, "Environment"))

    def start(self, root: ThrowawayRoot, config: Path, cwd: Path) -> AgentProcess:
        passwd = root.run("getent", "passwd", self.user[0]).stdout.strip().split(":")
        argv = root.argv(*self.exec_start, user=f"{passwd[2]}:{passwd[3]}")
        return _start(argv, config, {**ROOT_ENV, **self.env}, cwd)


def _enrol_into(root: ThrowawayRoot, carry: Path, stack: Stack, agent_id: str) -> None:
    """/etc/epns as ``epns-agent enrol`` leaves it: root's files, the key
    0600, an agent.toml naming them with ``state_dir = "state"``."""
    bundle = stack.create_agent(agent_id)
    for name in ("agent.crt", "agent.key", "ca.crt", "server.pub"):
        shutil.copy2(bundle / name, carry / name)
    config = _config(stack, agent_id, carry / "agent.toml", Path("/etc/epns"))
    config.write_text(re.sub(r'^state_dir = .*$', 'state_dir = "state"',
                             config.read_text(), flags=re.MULTILINE))
    root.run("install", "-d", "-m", "0755", "/etc/epns")
    for name in ("agent.toml", "agent.crt", "ca.crt", "server.pub"):
        root.run("install", "-m", "0644", f"/mnt/{name}", f"/etc/epns/{name}")
    root.run("install", "-m", "0600", "/mnt/agent.key", "/etc/epns/agent.key")


def _run_until_synced(unit: UnitRun, root: ThrowawayRoot, carry: Path, stack: Stack,
                      agent_id: str) -> None:
    agent = unit.start(root, carry / "agent.toml", carry.parent)
    try:
        _connects_and_syncs(stack, agent_id, agent)
    finally:
        assert agent.stop() == 0, "\n".join(agent.lines)


def test_deb_installs_runs_upgrades_and_goes_away_in_a_throwaway_root(
        dist: Path, tmp_path: Path, throwaway: tuple[ThrowawayRoot, Path],
        make_stack: Callable[..., Stack]) -> None:
    root, carry = throwaway
    host_passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    debs = sorted(dist.glob(f"epns-agent_{__version__}-1_*.deb"))
    assert len(debs) == 1, debs
    shutil.copy2(debs[0], carry / "first.deb")
    # The next revision: the same tree under a newer version, as an upgrade sees it.
    raw = tmp_path / "raw"
    subprocess.run(["dpkg-deb", "--raw-extract", str(debs[0]), str(raw)], check=True, timeout=120)
    control = (raw / "DEBIAN" / "control").read_text()
    (raw / "DEBIAN" / "control").write_text(
        control.replace(f"Version: {__version__}-1", f"Version: {__version__}-2"))
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", "-Zgzip", str(raw),
                    str(carry / "second.deb")], check=True, capture_output=True, timeout=120)

    # Installed before it is configured: the user and directories, the unit
    # not enabled, a word on what to do.
    installed = root.run("dpkg", "-i", "/mnt/first.deb")
    assert "not configured yet" in installed.stderr
    passwd = root.run("getent", "passwd", "epns").stdout.strip().split(":")
    assert passwd[5:] == [STATE, "/usr/sbin/nologin"]
    assert _owner_and_mode(root, STATE) == "epns:epns 750"
    assert root.run("epns-agent", "--help").stdout.startswith("usage: epns-agent")
    assert root.run("epns-check", "--help").stdout.startswith("usage:")
    unit = UnitRun(root.run("cat", UNIT).stdout)
    assert unit.exec_start == ["/usr/bin/epns-agent", "run", "--config", "/etc/epns/agent.toml"]
    assert unit.user == ["epns"]
    assert unit.env["EPNS_AGENT_STATE_DIR"] == STATE
    if shutil.which("systemd-analyze"):
        # As tests/deploy/test_systemd_units.py verifies the repository's: any word fails.
        verified = root.run("systemd-analyze", "verify", "--man=no", UNIT, check=False)
        assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    assert not root.exists(WANTS)
    # The host's root is untouched.
    assert not Path("/usr/lib/epns-agent").exists()
    assert not Path("/usr/bin/epns-agent").exists()

    # Identities of 30 s: the agent renews once while it runs below.
    stack = make_stack(identity__certificate_lifetime="30")
    _enrol_into(root, carry, stack, "deb-agent")
    enrolled_cert = root.run("cat", "/etc/epns/agent.crt").stdout

    # Reconfigured now that agent.toml is there (docs/install-agent.md): the
    # key and /etc/epns are given to the epns group and the unit enabled; the
    # agent runs as epns from /usr/bin.
    root.run("dpkg-reconfigure", "epns-agent")
    assert _owner_and_mode(root, "/etc/epns/agent.key") == "root:epns 640"
    assert _owner_and_mode(root, "/etc/epns") == "root:epns 770"
    assert root.exists(WANTS)
    agent = unit.start(root, carry / "agent.toml", carry.parent)
    try:
        _connects_and_syncs(stack, "deb-agent", agent)
        # As epns, it wrote its renewed identity into /etc/epns and moved to it.
        agent.log_contains(r"identity_renewed ", timeout=45)
        renewed = next(i for i, line in enumerate(agent.lines) if "identity_renewed " in line)
        agent.log_contains(r"\bconnected ", timeout=30, after=renewed)
    finally:
        assert agent.stop() == 0, "\n".join(agent.lines)
    assert root.run("cat", "/etc/epns/agent.crt").stdout != enrolled_cert
    assert _owner_and_mode(root, "/etc/epns/agent.key") == "epns:epns 600"
    # Its state went where the unit's EPNS_AGENT_STATE_DIR says.
    status = json.loads(root.run("cat", f"{STATE}/status.json").stdout)
    assert status["agent_id"] == "deb-agent"
    assert not root.exists("/etc/epns/state")
    kept_config = _digests(root, "/etc/epns")
    kept_state = _digests(root, STATE)

    # Upgrade: configuration, identity and state as they were; it runs again.
    root.run("dpkg", "-i", "/mnt/second.deb")
    assert root.run("dpkg-query", "-W", "-f", "${Version}", "epns-agent").stdout == (
        f"{__version__}-2")
    assert _digests(root, "/etc/epns") == kept_config
    assert _digests(root, STATE) == kept_state
    assert root.exists(WANTS)
    _run_until_synced(unit, root, carry, stack, "deb-agent")

    # A unit the administrator disabled stays disabled through a reinstall.
    root.run("systemctl", "disable", "epns-agent.service")
    assert not root.exists(WANTS)
    root.run("dpkg", "-i", "/mnt/second.deb")
    assert not root.exists(WANTS)

    # Remove: the program goes, configuration, identity and state stay.
    root.run("dpkg", "-r", "epns-agent")
    for gone in ("/usr/bin/epns-agent", "/usr/bin/epns-check", "/usr/lib/epns-agent",
                 "/usr/lib/systemd/system/epns-agent.service"):
        assert not root.exists(gone), gone
    assert set(_digests(root, "/etc/epns")) == set(kept_config)
    assert root.exists(f"{STATE}/status.json")

    # Purge: the agent's files and systemd's links go; the user stays.
    root.run("dpkg", "-P", "epns-agent")
    for gone in ("/etc/epns", STATE, WANTS,
                 "/etc/systemd/system/epns-agent.service"):
        assert not root.exists(gone), gone
    assert root.run("dpkg-query", "-W", "epns-agent", check=False).returncode != 0
    assert root.run("getent", "passwd", "epns").returncode == 0
    leftovers = root.run("find", "/etc/systemd", "/usr/lib/systemd", "-name",
                         "epns-agent*").stdout
    assert leftovers == ""
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == host_passwd


def test_single_file_runs_as_the_repository_unit_runs_it_in_a_throwaway_root(
        dist: Path, throwaway: tuple[ThrowawayRoot, Path],
        make_stack: Callable[..., Stack]) -> None:
    """The one-line installer's way without dpkg: the .pyz as
    /usr/local/bin/epns-agent under systemd/epns-agent.service, whose
    SHIV_ROOT gives it the state directory to unpack into."""
    root, carry = throwaway
    shutil.copy2(dist / f"epns-agent-{__version__}.pyz", carry / "epns-agent.pyz")
    root.run("install", "-m", "0755", "/mnt/epns-agent.pyz", "/usr/local/bin/epns-agent")
    # docs/install-agent.md, section 4; systemd's StateDirectory= makes the directory.
    root.run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "epns")
    root.run("install", "-d", "-m", "0750", "-o", "epns", "-g", "epns", STATE)
    stack = make_stack()
    _enrol_into(root, carry, stack, "pyz-agent")
    root.run("chgrp", "epns", "/etc/epns/agent.key")
    root.run("chmod", "0640", "/etc/epns/agent.key")
    unit = UnitRun((ROOT / "systemd" / "epns-agent.service").read_text())
    assert unit.exec_start[0] == "/usr/local/bin/epns-agent"
    _run_until_synced(unit, root, carry, stack, "pyz-agent")
    assert root.exists(f"{unit.env['SHIV_ROOT']}")
    status = json.loads(root.run("cat", f"{STATE}/status.json").stdout)
    assert status["agent_id"] == "pyz-agent"
