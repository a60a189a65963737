"""packaging/macos/com.epns.agent.plist: the agent's launchd daemon.

No Mac runs here, so launchd never loads it: what is checked is that it
parses, that it runs the command and config the agent's CLI accepts and
defaults to on macOS, installed where the systemd unit has it, and that it
keeps the agent running as the unit does."""

from __future__ import annotations

import plistlib
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from agent_push.platform import paths

ROOT = Path(__file__).resolve().parents[2]
PLIST = ROOT / "packaging" / "macos" / "com.epns.agent.plist"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    with PLIST.open("rb") as handle:
        loaded = plistlib.load(handle)
    assert isinstance(loaded, dict)
    return loaded


def _unit(key: str) -> str:
    for line in (ROOT / "systemd" / "epns-agent.service").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.partition("=")[2]
    raise AssertionError(f"no {key} in the unit")


def test_the_label_is_the_file_name(job: dict[str, Any]) -> None:
    assert job["Label"] == PLIST.stem


def test_it_runs_the_agent_with_the_macos_default_config(job: dict[str, Any]) -> None:
    program, *args = job["ProgramArguments"]
    # Where pipx --global installs it, as the systemd unit says.
    assert program == shlex.split(_unit("ExecStart"))[0]
    assert args[:1] == ["run"]
    config = args[args.index("--config") + 1]
    assert PurePosixPath(config) == paths.config_file("darwin", {})
    assert PurePosixPath(job["WorkingDirectory"]) == paths.config_dir("darwin", {})


def test_the_cli_accepts_its_arguments(job: dict[str, Any]) -> None:
    _program, *args = job["ProgramArguments"]
    done = subprocess.run([str(BIN / "epns-agent"), *args, "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: epns-agent run")
    # And without --help it reads that very file: absent here, so it says so.
    done = subprocess.run([str(BIN / "epns-agent"), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert args[-1] in done.stderr


def test_it_is_kept_running_as_the_systemd_unit_keeps_it(job: dict[str, Any]) -> None:
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] is True
    assert job["ThrottleInterval"] == int(_unit("RestartSec"))
    assert job["Umask"] == int(_unit("UMask"), 8)
    assert job["EnvironmentVariables"] == {"PYTHONUNBUFFERED": "1"}
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert PurePosixPath(job[key]).parent == PurePosixPath("/Library/Logs")
