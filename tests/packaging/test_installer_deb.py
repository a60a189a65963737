"""The one-line installer with the real ``.deb``, in a throwaway root (an
overlay of ``/`` in a private mount namespace, tests/support/throwaway_root.py;
never the host's root): the server offers what ``scripts/build-packages``
built, the command ``POST /api/v1/enrol-tokens`` answers runs as root inside
the root exactly as printed (less ``sudo``), installs the package with
apt-get, enrols without ``--id`` and gives the key to the epns group; the
agent, run as the unit runs it, comes online and satisfies a wake-up.

``EPNS_TEST_DIST`` names a directory ``scripts/build-packages`` filled
already, to skip the build (tests/packaging/conftest.py)."""

from __future__ import annotations

import hashlib
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from epns import __version__, machine
from tests.server.conftest import Stack
from tests.support.agents import AgentProcess
from tests.support.processes import ROOT, pump_stderr
from tests.support.throwaway_root import ENV as ROOT_ENV
from tests.support.throwaway_root import ThrowawayRoot, why_not

SYSTEM_PYTHON = Path("/usr/bin/python3")
UNIT = "/usr/lib/systemd/system/epns-agent.service"


def _why_not_here() -> str | None:
    if (reason := why_not()) is not None:
        return reason
    if shutil.which("curl") is None:
        return "no curl for the install command"
    done = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.stdout.strip() != str(sys.version_info[:2]):
        return f"{SYSTEM_PYTHON} is not the minor version the .deb is built for"
    return None


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[ThrowawayRoot]:
    if reason := _why_not_here():
        pytest.skip(reason)
    carry = tmp_path / "carry"
    carry.mkdir()
    root = ThrowawayRoot(tmp_path / "overlay", carry)
    yield root
    root.close()


def _unit_value(lines: list[str], key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


@pytest.mark.timeout(300)
def test_the_one_line_installer_installs_the_deb_and_the_agent_answers(
        dist: Path, tmp_path: Path, throwaway: ThrowawayRoot,
        make_stack: Callable[..., Stack]) -> None:
    root = throwaway
    packages = tmp_path / "packages"
    packages.mkdir()
    debs = sorted(dist.glob(f"epns-agent_{__version__}-1_*.deb"))
    assert len(debs) == 1, debs
    shutil.copy2(debs[0], packages)
    # The single file is on offer too: with dpkg there, the .deb is chosen.
    shutil.copy2(dist / f"epns-agent-{__version__}.pyz", packages)
    stack = make_stack(enrol__packages_dir=str(packages))
    with stack.api() as api:
        made = api.post("/api/v1/enrol-tokens", json={"max_uses": None,
                                                      "groups": ["debs"]}).json()
    argv = shlex.split(made["install_command"])
    assert argv[:3] == ["sudo", "sh", "-c"]
    # As root already, in the throwaway root: the command as printed, less sudo.
    done = root.run(*argv[1:], check=False, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    agent_id = machine.agent_id_from_hostname(socket.gethostname())
    assert f"installed {debs[0].name}" in done.stderr
    assert f"enrolled as {agent_id}" in done.stdout
    assert "no systemd here" in done.stderr
    assert root.run("dpkg-query", "-W", "-f", "${Status}", "epns-agent").stdout == (
        "install ok installed")
    assert root.run("stat", "-c", "%U:%G %a", "/etc/epns/agent.key").stdout.strip() == (
        "root:epns 640")
    # The host's root is untouched.
    for path in ("/etc/epns", "/usr/bin/epns-agent", "/usr/lib/epns-agent"):
        assert not Path(path).exists(), path

    _run_as_unit(root, UNIT, stack, agent_id, tmp_path)
    with stack.api() as api:
        assert api.get(f"/api/v1/agents/{agent_id}").json()["groups"] == ["debs"]


def _run_as_unit(root: ThrowawayRoot, unit_path: str, stack: Stack, agent_id: str,
                 cwd: Path) -> None:
    """Run the agent as its unit would (command, user, environment; no
    systemd sandbox): it must come online and satisfy a wake-up."""
    unit = root.run("cat", unit_path).stdout.splitlines()
    exec_start = shlex.split(_unit_value(unit, "ExecStart")[0])
    unit_env = dict(value.split("=", 1) for value in _unit_value(unit, "Environment"))
    passwd = root.run("getent", "passwd", "epns").stdout.strip().split(":")
    process = subprocess.Popen(root.argv(*exec_start, user=f"{passwd[2]}:{passwd[3]}"),
                               cwd=cwd, env={**ROOT_ENV, **unit_env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    agent = AgentProcess(process, cwd / "agent.toml")
    threading.Thread(target=pump_stderr, args=(process, agent.lines), daemon=True).start()
    stack.agents.append(agent)
    try:
        stack.wait_agent(agent_id, "online", timeout=60)
        stack.wait_wakeup(stack.wake(agent_id), "satisfied", timeout=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nagent log:\n" + "\n".join(agent.lines)) from exc


@pytest.mark.timeout(300)
def test_without_dpkg_the_installer_installs_the_single_file_and_its_unit(
        dist: Path, tmp_path: Path, throwaway: ThrowawayRoot,
        make_stack: Callable[..., Stack]) -> None:
    root = throwaway
    packages = tmp_path / "packages"
    packages.mkdir()
    for name in (f"epns-agent-{__version__}.pyz", f"epns-agent_{__version__}-1_amd64.deb"):
        if (dist / name).exists():
            shutil.copy2(dist / name, packages)
    shutil.copy2(ROOT / "systemd" / "epns-agent.service", packages)
    # A machine without dpkg (in the throwaway root only).
    root.run("rm", "/usr/bin/dpkg")
    stack = make_stack(enrol__packages_dir=str(packages))
    with stack.api() as api:
        made = api.post("/api/v1/enrol-tokens", json={"max_uses": 2}).json()
    done = root.run(*shlex.split(made["install_command"])[1:], check=False, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    agent_id = machine.agent_id_from_hostname(socket.gethostname())
    assert "installed the single-file agent: /usr/local/bin/epns-agent" in done.stderr
    assert f"enrolled as {agent_id}" in done.stdout
    installed = root.run("sha256sum", "/usr/local/bin/epns-agent").stdout.split()[0]
    pyz = (packages / f"epns-agent-{__version__}.pyz").read_bytes()
    assert installed == hashlib.sha256(pyz).hexdigest()
    unit = "/etc/systemd/system/epns-agent.service"
    assert root.run("cat", unit).stdout == (ROOT / "systemd" / "epns-agent.service").read_text()
    assert root.run("stat", "-c", "%U:%G %a", "/etc/epns/agent.key").stdout.strip() == (
        "root:epns 640")
    # Readable, and writable for renewals, by the epns group only.
    assert root.run("stat", "-c", "%U:%G %a", "/etc/epns").stdout.strip() == "root:epns 770"
    assert not Path("/usr/local/bin/epns-agent").exists()
    # What systemd's StateDirectory= would make before the first start.
    root.run("install", "-d", "-o", "epns", "-g", "epns", "-m", "0750", "/var/lib/epns-agent")
    _run_as_unit(root, unit, stack, agent_id, tmp_path)
