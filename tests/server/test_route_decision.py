"""One route decision for push and sync (``epns.routes.RouteBook``), with a
real agent, a real server and a real proxy (Debian's tinyproxy) on loopback:
the sync goes the way that works, a proxy that fails either fails for both,
and a proxy's 403 refuses a port, not the proxy. Each test ends with a
wake-up satisfied: the loop closes, not only push.

Loopback cannot take the direct route away; the network-namespace matrix
(``tests/netns``) does, with Debian's stock Squid."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Stack
from tests.support.network import FreezableRelay, Tinyproxy, start_tinyproxy


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    proxy = start_tinyproxy(tmp_path)
    yield proxy
    proxy.stop()


def _satisfied_within(stack: Stack, agent_id: str, seconds: float) -> float:
    """Wake ``agent_id``; the seconds from request to satisfied (server clock)."""
    wakeup = stack.wait_wakeup(stack.wake(agent_id), "satisfied", timeout=seconds + 10)
    target = wakeup["targets"][0]
    took: float = target["satisfied_at"] - target["requested_at"]
    assert took < seconds, wakeup
    return took


def test_a_port_the_proxy_forbids_is_skipped_not_the_proxy(stack: Stack, tmp_path: Path) -> None:
    """Like Debian's stock Squid: CONNECT only to one port (here the broker's
    fallback, standing for 443). The agent tries that port through the proxy
    instead of giving the proxy up, and the sync, whose port the proxy also
    refuses, goes direct."""
    assert stack.broker.fallback is not None
    (tmp_path / "strict").mkdir()
    proxy = start_tinyproxy(tmp_path / "strict", connect_ports=(stack.broker.fallback,))
    try:
        agent = stack.start_agent("a1", ports=[stack.broker.port, stack.broker.fallback],
                                  proxy={"url": proxy.url()})
        agent.log_contains(rf"proxy_port_refused port={stack.broker.port} ")
        agent.log_contains(rf"\bconnected route=proxy:{stack.broker.fallback} ")
        agent.log_contains(r"sync_done .*reason=connect")
        server_port = stack.server.url.rsplit(":", 1)[1]
        agent.log_contains(rf"proxy_port_refused port={server_port} ")
        assert agent.count(r"route_failed route=direct:") == 0
        # The refusal is remembered: the next syncs go direct at once.
        _satisfied_within(stack, "a1", 1.0)
        assert agent.count(rf"proxy_port_refused port={server_port} ") == 1
    finally:
        proxy.stop()


def test_a_wrong_proxy_password_sends_push_and_sync_direct(stack: Stack,
                                                          tinyproxy: Tinyproxy) -> None:
    agent = stack.start_agent("a1", proxy={"url": tinyproxy.url(password="wrong")})
    agent.log_contains(r"proxy_failed fault=proxy_credentials")
    agent.log_contains(rf"\bconnected route=direct:{stack.broker.port} ")
    agent.log_contains(r"sync_done .*reason=connect")
    _satisfied_within(stack, "a1", 1.0)


def test_a_proxy_killed_mid_session_moves_push_and_sync_direct(stack: Stack,
                                                              tinyproxy: Tinyproxy) -> None:
    agent = stack.start_agent("a1", proxy={"url": tinyproxy.url()})
    agent.log_contains(rf"\bconnected route=proxy:{stack.broker.port} ")
    first = agent.log_contains(r"sync_done .*reason=connect")
    # The sync went the way push goes: through the proxy.
    assert tinyproxy_connects(tinyproxy, stack.server.url) >= 1, first
    tinyproxy.stop()
    agent.log_contains(rf"\bconnected route=direct:{stack.broker.port} ", timeout=20)
    _satisfied_within(stack, "a1", 1.0)


def tinyproxy_connects(proxy: Tinyproxy, url: str) -> int:
    """How many CONNECTs to ``url``'s port tinyproxy logged."""
    port = url.rsplit(":", 1)[1]
    log = Path(str(proxy.process.args[-1])).parent / "tinyproxy.log"
    deadline = time.monotonic() + 5
    count = 0
    while time.monotonic() < deadline:
        count = sum(f":{port}" in line and "CONNECT" in line
                    for line in log.read_text(errors="replace").splitlines())
        if count:
            return count
        time.sleep(0.1)
    return count


def test_a_path_that_stops_answering_is_given_up_within_the_bound(stack: Stack) -> None:
    """A NAT forgets the agent's flow: packets vanish, nothing resets. The
    agent pings on time, hears nothing back, gives the connection up within
    keep-alive + answer timeout (10 + 5 s here), says so in its status, and
    reconnects; the wake-up sent meanwhile is satisfied."""
    relay = FreezableRelay(stack.broker.port)
    try:
        agent = stack.start_agent("a1", ports=[relay.port], keepalive={"primary": 10})
        agent.log_contains(rf"\bconnected route=direct:{relay.port} keepalive=10")
        agent.log_contains(r"sync_done .*reason=connect")
        code, report = agent.status()
        assert code == 0, report
        assert "broker last heard" in report
        seen = len(agent.lines)
        relay.freeze()
        forgotten = time.monotonic()
        wakeup = stack.wake("a1")  # published into the dead flow's session
        agent.log_contains(r"disconnected .*the path stopped answering: no reply to a ping "
                           r"within 5 s", after=seen, timeout=25)
        deaf = time.monotonic() - forgotten
        assert deaf <= 10 + 5 + 2, f"deaf for {deaf:.1f} s"
        agent.log_contains(rf"\bconnected route=direct:{relay.port}", after=seen, timeout=15)
        stack.wait_wakeup(wakeup, "satisfied", timeout=15)
    finally:
        relay.close()
