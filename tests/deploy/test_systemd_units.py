"""systemd/: the agent, broker and server units.

- ``systemd-analyze verify`` accepts each unit without a word (an unknown key
  or syscall group is only a warning there, so any output fails), with
  ExecStart pointed at this venv's entry points.
- ``systemd-analyze security --offline`` rates each one at most 2.0.
- ExecStart is a real entry point and subcommand whose ``--help`` parses with
  the unit's options, and one the tests run; the hardening the issue lists is
  present; the broker and the server may bind 443 and hold a descriptor per
  agent.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from epns.agent_config import ENV_PREFIX as AGENT_PREFIX
from epns.agent_config import AgentSettings
from epns.broker_config import BrokerSettings
from epns.config import load
from epns.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("epns-agent", "epns-broker", "epns-server")
BIN = Path(sys.executable).parent
INSTALLED = "/usr/local/bin/"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
TESTED_BY = {
    "epns-agent": ("tests/support/agents.py", '"agent_push", "run"'),
    "epns-broker": ("tests/support/processes.py", '"-m", "broker"'),
    "epns-server": ("tests/support/server.py", '"server_push", "run"'),
}
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "MemoryDenyWriteExecute": "yes",
    "RestrictNamespaces": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
    "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
}


def _entries(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; repeated keys (Environment) kept."""
    section, out = "", []
    for raw in (ROOT / "systemd" / f"{unit}.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def _service(unit: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for section, key, value in _entries(unit):
        if section == "Service":
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("unit", UNITS)
def test_exec_start_is_a_real_command_the_tests_run(unit: str) -> None:
    argv = shlex.split(_service(unit)["ExecStart"][0])
    assert argv[0] == INSTALLED + unit, "pipx --global and the docs put it there"
    done = subprocess.run([str(BIN / unit), *argv[1:], "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {unit}")
    test_file, invocation = TESTED_BY[unit]
    assert invocation in (ROOT / test_file).read_text()


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(unit: str) -> None:
    service = _service(unit)
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{unit}: {key}={value}"
    assert "@system-service" in service["SystemCallFilter"]
    assert service["RestrictAddressFamilies"][0].split()[:2] == ["AF_INET", "AF_INET6"]
    assert service["User"] == ["epns"], "a static user: the key is group-readable"
    assert "DynamicUser" not in service
    if unit == "epns-agent":
        assert service["CapabilityBoundingSet"] == [""]
        assert "LimitNOFILE" not in service
    else:
        # 443 is the fallback listener; one descriptor per agent, with room.
        assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
        assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
        assert int(service["LimitNOFILE"][0]) > BrokerSettings().limits.max_connections + 1000


def test_the_server_writes_only_to_its_state_directory() -> None:
    """Its defaults are relative (certs/, state/): they must land in the one
    writable directory, since ProtectSystem=strict makes /etc read-only."""
    service = _service("epns-server")
    assert service["WorkingDirectory"] == ["/var/lib/" + service["StateDirectory"][0]]
    assert "--config" not in service["ExecStart"][0]
    assert service["EnvironmentFile"] == ["-/etc/epns/server.env"]


def test_the_agent_units_environment_is_real_config() -> None:
    service = _service("epns-agent")
    env = dict(value.split("=", 1) for value in service["Environment"])
    ours = {k: v for k, v in env.items() if k.startswith("EPNS_")}
    assert ours == {"EPNS_AGENT_STATE_DIR": "/var/lib/" + service["StateDirectory"][0]}
    # The loader knows the key (a typo would be "unknown key"): only the
    # required identity is missing from an otherwise empty config.
    with pytest.raises(ConfigError, match="identity"):
        load(AgentSettings, None, ours, AGENT_PREFIX)


def test_the_agent_may_write_where_its_identity_is() -> None:
    """A renewal writes the new key and certificate beside the old ones, in
    the config's directory, which ProtectSystem=strict would make read-only."""
    service = _service("epns-agent")
    argv = service["ExecStart"][0].split()
    config = argv[argv.index("--config") + 1]
    assert service["ReadWritePaths"] == [config.rsplit("/", 1)[0]]


needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze is not installed")


def _local_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv: verify checks the binary."""
    text = (ROOT / "systemd" / f"{unit}.service").read_text()
    path = tmp_path / f"{unit}.service"
    path.write_text(text.replace(INSTALLED, f"{BIN}/"))
    return path


@needs_systemd
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_silent(unit: str, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no",
                           str(_local_copy(unit, tmp_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == "", done.stdout + done.stderr


@needs_systemd
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_rates_the_exposure_low(unit: str, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager",
                           str(_local_copy(unit, tmp_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert level is not None, done.stdout + done.stderr
    assert float(level.group(1)) <= 2.0, done.stdout
