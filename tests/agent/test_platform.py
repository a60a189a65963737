"""agent_push.platform: the pure choices for every system, and the Linux
branch for real on this machine (interfaces, modes, signals, a logind sleep
inhibitor). The Windows and macOS branches cannot run here; CI type-checks
them (scripts/test: mypy --platform win32 and darwin)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from agent_push import cli, platform
from agent_push.platform import paths
from agent_push.state import StateDir
from epns.envelope import Interface
from epns.errors import ConfigError, PlatformError
from tests.support.agents import start_agent, write_agent_config
from tests.support.clients import agent_files, connect, connect_server

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the Linux branch")


# -- where the config is, per system (pure) ------------------------------------

def test_the_config_is_in_etc_on_linux_and_in_application_support_on_macos() -> None:
    assert paths.config_file("linux", {}) == PurePosixPath("/etc/epns/agent.toml")
    assert paths.config_file("freebsd14", {}) == PurePosixPath("/etc/epns/agent.toml")
    assert paths.config_file("darwin", {"ProgramData": "D:\\x"}) == PurePosixPath(
        "/Library/Application Support/epns/agent.toml")


@pytest.mark.parametrize(("env", "expected"), [
    ({"ProgramData": "D:\\Data"}, "D:\\Data\\epns\\agent.toml"),
    # os.environ on Windows spells every name in capitals.
    ({"PROGRAMDATA": "E:\\PD"}, "E:\\PD\\epns\\agent.toml"),
    ({}, "C:\\ProgramData\\epns\\agent.toml"),
    # Relative: a mangled environment, not a place to put a config.
    ({"PROGRAMDATA": "ProgramData"}, "C:\\ProgramData\\epns\\agent.toml"),
])
def test_the_config_is_under_program_data_on_windows(env: dict[str, str],
                                                      expected: str) -> None:
    found = paths.config_file("win32", env)
    assert isinstance(found, PureWindowsPath)
    assert found == PureWindowsPath(expected)


def test_this_machine_uses_the_linux_default() -> None:
    assert platform.default_config() == Path("/etc/epns/agent.toml")


def test_the_machine_id_is_the_one_systemd_keeps() -> None:
    etc = Path("/etc/machine-id")
    if not etc.exists():
        pytest.skip("this machine has no /etc/machine-id")
    assert platform.machine_id() == etc.read_text(encoding="ascii").strip()


def test_without_config_the_systems_file_is_read(tmp_path: Path, pki_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    default = write_agent_config(tmp_path / "agent.toml", pki_dir, "a001", [8883])
    monkeypatch.setattr(platform, "default_config", lambda: default)
    assert cli.load_settings(None).identity.agent_id == "a001"
    # An explicit one wins.
    other = write_agent_config(tmp_path / "other.toml", pki_dir, "a002", [8883])
    assert cli.load_settings(other).identity.agent_id == "a002"


def test_without_config_or_a_system_file_the_error_says_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "agent.toml"
    monkeypatch.setattr(platform, "default_config", lambda: missing)
    for name in [name for name in os.environ if name.startswith("EPNS_AGENT_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match=rf"identity.*no --config given, and no {missing}"):
        cli.load_settings(None)
    # The environment alone still makes a config, as before.
    monkeypatch.setenv("EPNS_AGENT_IDENTITY__AGENT_ID", "a003")
    assert cli.load_settings(None).identity.agent_id == "a003"


def test_macs_are_spelt_as_on_linux() -> None:
    assert platform.normal_mac("52-54-00-AB-CD-EF") == "52:54:00:ab:cd:ef"
    assert platform.normal_mac("52:54:00:ab:cd:ef") == "52:54:00:ab:cd:ef"
    assert platform.normal_mac("00-00-00-00-00-00") is None
    assert platform.normal_mac(None) is None


def test_service_registration_is_refused_with_the_linux_way() -> None:
    done = subprocess.run([sys.executable, "-m", "agent_push", "service", "install"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "systemd/epns-agent.service" in done.stderr
    assert "/etc/epns/agent.toml" in done.stderr


# -- the Linux branch, for real ------------------------------------------------

def test_interfaces_include_loopback() -> None:
    found = platform.interfaces()
    assert Interface("127.0.0.1", 8, None) in found
    assert all(0 <= item.prefix <= 128 for item in found)


def test_the_state_directory_is_created_0700(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "var" / "epns")
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o700
    # An existing directory keeps its mode, as before.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    platform.private_directory(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


def test_a_file_gets_its_mode_even_when_it_exists(tmp_path: Path) -> None:
    key = tmp_path / "agent.key"
    key.write_bytes(b"old")
    key.chmod(0o644)
    platform.write_file(key, b"secret", 0o600)
    assert key.read_bytes() == b"secret"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_process_alive() -> None:
    assert platform.process_alive(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    assert not platform.process_alive(child.pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_stop_handlers_stop_the_loop(sig: signal.Signals) -> None:
    async def until_stopped() -> None:
        stop = asyncio.Event()
        platform.install_stop_handlers(asyncio.get_running_loop(), stop.set)
        os.kill(os.getpid(), sig)
        async with asyncio.timeout(10):
            await stop.wait()

    asyncio.run(until_stopped())


def test_a_process_group_is_killed_whole() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"],
                              stdout=subprocess.PIPE, text=True, **platform.PROCESS_GROUP)
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    platform.kill_process_group(leader.pid)
    assert leader.wait(10) == -signal.SIGKILL
    leader.stdout.close()
    deadline = time.monotonic() + 10
    while platform.process_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not platform.process_alive(grandchild)
    platform.kill_process_group(leader.pid)  # gone: no error


def test_the_awake_clock_is_monotonic() -> None:
    first = platform.awake_clock()
    assert platform.awake_clock() >= first


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_agent_says_goodbye_and_exits_0_on(sig: signal.Signals, epns_broker,
                                               pki_dir: Path, tmp_path: Path,
                                               agent_ids) -> None:
    agent_id, = agent_ids(1)
    watcher = connect_server(epns_broker.port, pki_dir)
    assert watcher.subscribe(f"epns/v1/agents/{agent_id}/presence") == [1]
    config = write_agent_config(tmp_path / "agent.toml", pki_dir, agent_id, [epns_broker.port],
                                sync={"action": "command", "command": ["true"]})
    agent = start_agent(config)
    try:
        _presence(watcher, b'"online"')
        assert agent.stop(sig) == 0, agent.lines
        _presence(watcher, b'"offline"')
        assert any("stopped" in line for line in agent.lines)
    finally:
        agent.stop(signal.SIGKILL)
        watcher.close()
        # Only the agent may publish its presence: clear it as the agent, so
        # that tests watching every agent's presence see only their own.
        as_agent = connect(epns_broker.port, pki_dir, agent_id,
                           cert=agent_files(pki_dir, agent_id))
        as_agent.publish(f"epns/v1/agents/{agent_id}/presence", b"", retain=True)
        as_agent.close()


def _presence(watcher, state: bytes, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = watcher.expect(timeout=max(0.1, deadline - time.monotonic()))
        if got.topic.endswith("/presence") and state in got.payload:
            return
    raise AssertionError(f"no {state!r} presence")


# -- holding sleep off through logind -----------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/>
    <allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""
LOGIND = next((str(p) for p in (Path("/lib/systemd/systemd-logind"),
                                 Path("/usr/lib/systemd/systemd-logind")) if p.exists()), None)


def _inhibitors(env: dict[str, str]) -> str:
    done = subprocess.run(["systemd-inhibit", "--list", "--no-pager"], env=env,
                          capture_output=True, text=True, timeout=10, check=False)
    return done.stdout if done.returncode == 0 else ""


@pytest.fixture(scope="module")
def logind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real systemd-logind on a D-Bus system bus of its own (no system bus
    runs in this container); the environment that points at it."""
    if os.geteuid() != 0:
        pytest.skip("systemd-logind needs root")
    missing = [name for name, path in (("dbus-daemon", shutil.which("dbus-daemon")),
                                       ("systemd-logind", LOGIND),
                                       ("systemd-inhibit", shutil.which("systemd-inhibit")))
               if path is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    directory = tmp_path_factory.mktemp("bus")
    (directory / "bus.conf").write_text(BUS_CONFIG.format(socket=directory / "bus"))
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={directory / 'bus'}"}
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={directory / 'bus.conf'}",
                            "--nofork", "--print-address"], stdout=subprocess.PIPE, text=True)
    assert bus.stdout is not None
    bus.stdout.readline()  # the address: it listens
    log = (directory / "logind.log").open("w")
    daemon = subprocess.Popen([LOGIND], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _inhibitors(env) and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _inhibitors(env):
            pytest.skip("systemd-logind did not start here: "
                        + (directory / "logind.log").read_text().strip()[-300:])
        yield env
    finally:
        for process in (daemon, bus):
            process.terminate()
            process.wait(10)
        bus.stdout.close()
        log.close()


def test_a_sleep_inhibitor_is_listed_by_logind_until_released(
        logind: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", logind["DBUS_SYSTEM_BUS_ADDRESS"])
    assert "epns-agent" not in _inhibitors(logind)
    with platform.hold_awake("the subnet's Wake-on-LAN relay") as hold:
        listed = _inhibitors(logind)
        line = next(line for line in listed.splitlines() if line.startswith("epns-agent"))
        # WHO UID USER PID COMM WHAT WHY MODE
        assert " sleep the subnet's Wake-on-LAN relay block" in line, listed
    deadline = time.monotonic() + 10
    while "epns-agent" in _inhibitors(logind) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "epns-agent" not in _inhibitors(logind)
    hold.release()  # twice: harmless


def test_without_logind_the_error_says_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("systemd-inhibit") is None:
        pytest.skip("systemd-inhibit is not installed")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    with pytest.raises(PlatformError, match=r"through logind \(systemd-inhibit\): Failed to "
                                            r"connect to bus"):
        platform.hold_awake("test")


def test_without_systemd_inhibit_the_error_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PlatformError, match="systemd-inhibit cannot run"):
        platform.hold_awake("test")
