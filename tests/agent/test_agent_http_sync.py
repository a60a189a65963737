"""The real agent's built-in HTTP sync, woken through the real broker."""

from __future__ import annotations

import json
import re
import time

import pytest

from epns.sync_contract import SyncReply
from tests.support.clients import connect_server
from tests.support.sync_server import Answer, SyncServer


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sync_server(pki_dir):
    with SyncServer(pki_dir, client_certs="required") as server:
        yield server


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_wake_up_leads_to_a_post_then_a_get_that_carries_the_wake_id(
        epns_broker, pki_dir, run_agent, agent_ids, sign, sync_server, fmt):
    agent_id, = agent_ids(1)
    sync_server.reply = SyncReply(sync_interval=900.0, keepalive={"primary": 240})
    agent, _ = run_agent(agent_id, [epns_broker.port],
                         sync={"action": "http", "url": sync_server.url, "fetch": True,
                               "format": fmt, "command": []})
    wait_for(lambda: [r for r in sync_server.requests if r.report and
                      r.report.reason == "connect"], what="the connect sync")
    server = connect_server(epns_broker.port, pki_dir)
    wake = sign(agent_id)
    wake_id = json.loads(wake)["id"]
    requested_at = time.time()
    server.publish(f"epns/v1/agents/{agent_id}/cmd", wake)
    posted = wait_for(lambda: [r for r in sync_server.requests
                               if r.report and wake_id in r.report.wakes], what="the wake sync")
    report = posted[0].report
    assert posted[0].client_cn == agent_id  # the agent's identity, by mTLS
    assert report.agent_id == agent_id
    assert report.reason == "wake"
    assert report.started_at >= requested_at - 1.0
    assert report.changes["hostname"]
    assert posted[0].headers["content-type"].startswith(f"application/{fmt}")
    index = sync_server.requests.index(posted[0])
    wait_for(lambda: len(sync_server.requests) > index + 1, what="the GET")
    assert sync_server.requests[index + 1].method == "GET"
    hints = wait_for(lambda: _hints(agent), what="hints saved")
    assert hints["sync_interval"] == 900.0
    assert hints["keepalive"] == {"primary": 240}


def _hints(agent):
    path = agent.config.parent / f"state-{agent.config.stem}" / "hints.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_storm_answer_429_is_retried_after_retry_after(epns_broker, run_agent, agent_ids,
                                                         sync_server):
    agent_id, = agent_ids(1)
    sync_server.script(Answer(429, {"Retry-After": "1"}), Answer(503, {"Retry-After": "1"}))
    agent, _ = run_agent(agent_id, [epns_broker.port],
                         sync={"action": "http", "url": sync_server.url, "command": []})
    wait_for(lambda: len(sync_server.requests) >= 3, timeout=20, what="the third POST")
    assert sync_server.methods()[:3] == ["POST", "POST", "POST"]
    agent.log_contains(r"sync_done .*reason=connect")


def test_a_refused_identity_is_a_clear_sync_failure_and_the_agent_keeps_running(
        epns_broker, run_agent, agent_ids, sync_server):
    agent_id, = agent_ids(1)
    sync_server.script(Answer(401))
    agent, _ = run_agent(agent_id, [epns_broker.port],
                         sync={"action": "http", "url": sync_server.url, "command": []})
    line = agent.log_contains(r"sync_failed .*reason=connect")
    assert "401" in line
    assert agent.process.poll() is None
    code, report = agent.status()
    assert code == 0
    assert "401" in report


def test_a_failed_sync_is_retried_with_backoff_and_carries_the_wake(
        epns_broker, pki_dir, run_agent, agent_ids, sign, sync_server):
    agent_id, = agent_ids(1)
    # The server is down for four syncs: 503 without Retry-After, and no
    # retries within a sync, so that each answer fails one sync.
    sync_server.script(*[Answer(503)] * 4)
    agent, _ = run_agent(agent_id, [epns_broker.port],
                         sync={"action": "http", "url": sync_server.url, "command": [],
                               "max_retries": 0, "retry_base": 1.0})
    agent.log_contains(r"sync_failed .*reason=connect")
    failed_at = time.monotonic()
    server = connect_server(epns_broker.port, pki_dir)
    try:
        wake = sign(agent_id)
        server.publish(f"epns/v1/agents/{agent_id}/cmd", wake)
    finally:
        server.close()
    wake_id = json.loads(wake)["id"]
    done = agent.log_contains(r"sync_done .*reason=retry", timeout=30)
    elapsed = time.monotonic() - failed_at
    assert f"command_ids={wake_id}" in done  # the wake's failed sync is answered by the retry
    posts = [r.report for r in sync_server.requests if r.method == "POST"]
    assert len(posts) == 5  # four failures, one success: no tight loop
    assert posts[-1].reason == "retry"
    assert wake_id in posts[-1].wakes
    # Each failure schedules the next try: 1 s, then up to 2, 4, 8 s (full
    # jitter, at least 1 s); the wake's own sync replaced one retry.
    delays = [float(d) for d in re.findall(r"sync_retry_scheduled .*delay=([\d.]+) failures=",
                                          "\n".join(agent.lines))]
    assert len(delays) == 4
    assert all(1.0 <= d <= 2 ** n for n, d in enumerate(delays))
    syncs = [line for line in agent.lines if re.search(r"sync_(done|failed) ", line)]
    fired = [d for d, after in zip(delays, syncs[1:], strict=True) if "reason=retry" in after]
    assert len(fired) == 3
    assert elapsed >= sum(fired) - 0.5
    assert agent.count(r"sync_retry_scheduled") == 4  # the success scheduled none

