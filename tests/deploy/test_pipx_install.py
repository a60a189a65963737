"""The agent's pipx install (docs/install-agent.md): the epns-agent wheel that
``scripts/build-packages --wheels-only`` builds, ``pipx install`` into a
private PIPX_HOME, and the commands it puts on PATH; the venv pipx made holds
the agent's dependencies and none of the server's. About 40 s: pipx makes a
venv and installs every dependency. tests/packaging runs the installed agent
against a broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from epns import __version__

ROOT = Path(__file__).resolve().parents[2]
PIPX = Path(sys.executable).parent / "pipx"
LIST_DISTRIBUTIONS = ("import json, importlib.metadata as m; "
                      "print(json.dumps([d.metadata['Name'].lower() for d in m.distributions()]))")

pytestmark = [
    pytest.mark.pipx,
    pytest.mark.skipif(not PIPX.exists(), reason="pipx is not installed (pip install pipx)"),
    pytest.mark.timeout(300),
]


def _run(argv: list[str], env: dict[str, str], timeout: float = 240,
         cwd: Path | None = None) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=cwd)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_pipx_installs_the_agent_from_a_wheel(tmp_path: Path) -> None:
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"),
           "PIPX_BIN_DIR": str(tmp_path / "bin"), "PIPX_MAN_DIR": str(tmp_path / "man")}
    env = {k: v for k, v in env.items() if not k.startswith(("EPNS_", "VIRTUAL_ENV"))}
    _run([str(ROOT / "scripts" / "build-packages"), "--wheels-only", "--out",
          str(tmp_path / "dist")], {**env, "PYTHON": sys.executable})
    wheel = tmp_path / "dist" / f"epns_agent-{__version__}-py3-none-any.whl"
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
    assert listed.split()[:2] == ["epns-agent", __version__]
    python = tmp_path / "pipx" / "venvs" / "epns-agent" / "bin" / "python"
    names = json.loads(_run([str(python), "-c", LIST_DISTRIBUTIONS], env, cwd=tmp_path))
    assert "paho-mqtt" in names
    assert not {"fastapi", "sqlalchemy", "uvicorn", "uvloop", "epns-server"} & set(names)
