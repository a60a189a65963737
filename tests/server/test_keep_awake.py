"""One agent kept awake per subnet, end to end: a real broker, server and
agents, and a real systemd-logind on a D-Bus system bus of the test's own
(``tests/agent/test_platform.py``'s fixture): the elected agent's inhibitor is
listed by logind, an agent without a bus reports logind's own words, and the
server shows both.

The agents run on this machine, so they report its interfaces: the subnet is
this machine's own LAN (every agent here shares it)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from agent_push.platform import interfaces
from epns.keep_awake import lan_subnets
from tests.agent.test_platform import logind  # noqa: F401 - the fixture
from tests.server.conftest import Stack, _make_stack
from tests.support.processes import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = _make_stack(tmp_path_factory.mktemp("awake"), "epns", {})
    yield made
    made.stop()


def _inhibitors(env: dict[str, str]) -> str:
    done = subprocess.run(["systemd-inhibit", "--list", "--no-pager"], env=env,
                          capture_output=True, text=True, timeout=10, check=False)
    return done.stdout if done.returncode == 0 else ""


def _subnets(stack: Stack) -> dict[str, Any]:
    with stack.api() as api:
        answer = api.get("/api/v1/wol/subnets")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _subnet(stack: Stack, subnet: str) -> dict[str, Any]:
    return next(s for s in _subnets(stack)["subnets"] if s["subnet"] == subnet)


def _settings(stack: Stack, **wol: Any) -> None:
    with stack.api() as api:
        answer = api.put("/api/v1/settings/wol", json=wol)
    assert answer.status_code == 200, answer.text


def test_the_elected_agent_holds_a_logind_inhibitor_and_a_failure_is_reported(
        stack: Stack, logind: dict[str, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    lans = sorted(lan_subnets(interfaces()))
    if not lans:
        pytest.skip("this machine has no IPv4 LAN interface to make a subnet of")
    subnet = lans[0]
    bus = logind["DBUS_SYSTEM_BUS_ADDRESS"]
    # a1 reaches logind; a2 has no system bus; a3's config does not allow it.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)
    a1 = stack.start_agent("a1")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/epns-test-bus")
    a2 = stack.start_agent("a2")
    stack.start_agent("a3", wol={"allow_keep_awake": False})
    for agent_id in ("a1", "a2", "a3"):
        stack.wait_agent(agent_id, "online")

    # Off by default: the subnet and its relays are shown, nobody is kept awake.
    off = _subnets(stack)
    assert off["keep_awake"] is False
    view = _subnet(stack, subnet)
    assert (view["agents"], view["online"], view["eligible"], view["keeper"],
            view["warning"]) == (3, 3, 2, None, None)
    assert "epns-agent" not in _inhibitors(logind)

    # Turned on: the election runs at once (not at the next minute's recheck).
    _settings(stack, keep_awake=True)
    wait_until(lambda: _subnet(stack, subnet)["keeper_holding"] is True,
               "a1 holding sleep off", timeout=20)
    assert _subnet(stack, subnet)["keeper"] == "a1"
    listed = _inhibitors(logind)
    assert f"sleep Wake-on-LAN relay for {subnet}" in listed, listed
    a1.log_contains(r"keep_awake_holding")

    # a1 leaves (and releases); a2 is elected and cannot: logind's words.
    a1.stop()
    stack.agents.remove(a1)
    wait_until(lambda: "epns-agent" not in _inhibitors(logind), "a1's inhibitor gone")
    wait_until(lambda: _subnet(stack, subnet)["keeper"] == "a2"
               and _subnet(stack, subnet)["keeper_holding"] is False,
               "a2 elected, reporting its failure", timeout=45)
    failed = _subnet(stack, subnet)
    assert failed["keeper_detail"].startswith(
        "cannot hold sleep off through logind (systemd-inhibit): Failed to connect to bus")
    assert failed["warning"] == f"a2 could not hold off sleep: {failed['keeper_detail']}"
    a2.log_contains(r"keep_awake_failed")
    with stack.api() as api:
        history = api.get("/api/v1/agents/a2/history").json()
    assert any(e.get("kind") == "keep_awake_not_holding" for e in history), history

    # Off again: nobody is asked to hold any more.
    _settings(stack, keep_awake=False)
    wait_until(lambda: _subnet(stack, subnet)["keeper"] is None, "no keeper")
    assert _subnets(stack)["keep_awake"] is False
