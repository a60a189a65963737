"""An agent runs unchanged from the bundle the server made for it: the
``agent.toml`` alone, from any working directory, against the test stack (its
server names 127.0.0.1 and the test broker's port as the public address)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.server.conftest import Stack
from tests.support.agents import start_agent


def _run_unchanged(stack: Stack, bundle: Path, agent_id: str, elsewhere: Path) -> None:
    elsewhere.mkdir(exist_ok=True)
    agent = start_agent(bundle / "agent.toml", cwd=elsewhere)
    stack.agents.append(agent)
    shown = stack.wait_agent(agent_id, "online")
    assert shown["route"].startswith("direct:")
    assert "status=200" in agent.log_contains(r"sync_done .*reason=connect")
    with stack.api() as api:
        shown = api.get(f"/api/v1/agents/{agent_id}").json()
    assert shown["last_sync_result"] == "ok"
    # Relative paths were taken from the bundle, not from the working directory.
    assert (bundle / "state").is_dir()
    assert not (elsewhere / "state").exists()


def test_a_bundle_made_by_the_cli_runs_unchanged(stack: Stack, tmp_path: Path) -> None:
    bundle = tmp_path / "bundles" / "cli-1"
    stack.server.cli("agent", "create", "cli-1", "--group", "lab", "--out", str(bundle))
    assert stat.S_IMODE((bundle / "agent.key").stat().st_mode) == 0o600
    _run_unchanged(stack, bundle, "cli-1", tmp_path / "elsewhere")


@pytest.mark.parametrize("auth", ["certificate", "token"])
def test_a_bundle_from_the_api_runs_unchanged(stack: Stack, tmp_path: Path, auth: str) -> None:
    bundle = stack.create_agent(f"api-{auth}", auth=auth)
    identity = {"agent.crt", "agent.key"} if auth == "certificate" else {"agent.token"}
    assert {p.name for p in bundle.iterdir()} == {"agent.toml", "ca.crt", "server.pub",
                                                   *identity}
    _run_unchanged(stack, bundle, f"api-{auth}", tmp_path / "elsewhere")
