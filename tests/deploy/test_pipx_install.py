"""The agent's install path (docs/install-agent.md): a wheel of this checkout,
``pipx install`` into a private PIPX_HOME, and the commands it puts on PATH.
About 40 s: pipx makes a venv and installs every dependency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPX = Path(sys.executable).parent / "pipx"

pytestmark = [
    pytest.mark.pipx,
    pytest.mark.skipif(not PIPX.exists(), reason="pipx is not installed (pip install pipx)"),
    pytest.mark.timeout(300),
]


def _run(argv: list[str], env: dict[str, str], timeout: float = 240) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_pipx_installs_the_agent_from_a_wheel(tmp_path: Path) -> None:
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"),
           "PIPX_BIN_DIR": str(tmp_path / "bin"), "PIPX_MAN_DIR": str(tmp_path / "man")}
    env = {k: v for k, v in env.items() if not k.startswith(("EPNS_", "VIRTUAL_ENV"))}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir",
          str(tmp_path / "dist"), str(ROOT)], env)
    wheel = next((tmp_path / "dist").glob("epns-*.whl"))
    _run([str(PIPX), "install", str(wheel)], env)

    agent = tmp_path / "bin" / "epns-agent"
    assert agent.exists()
    # Its own interpreter in PIPX_HOME, not this test's venv.
    assert agent.resolve().is_relative_to(tmp_path / "pipx")
    assert _run([str(agent), "--help"], env).startswith("usage: epns-agent")
    for command in ("run", "status", "enrol"):
        assert _run([str(agent), command, "--help"], env).startswith(
            f"usage: epns-agent {command}")
    assert _run([str(tmp_path / "bin" / "epns-check"), "--help"], env).startswith("usage:")
    listed = _run([str(PIPX), "list", "--short"], env)
    assert listed.split()[:2] == ["epns", "0.1.0"]
