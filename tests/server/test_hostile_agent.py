"""One agent with its own valid certificate must not stop push for the fleet."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from epns import pki
from tests.server.conftest import Stack
from tests.support.clients import connect, connect_server
from tests.support.processes import wait_until
from tests.support.smtp_sink import SmtpSink
from tests.support.webhook_sink import WebhookSink


def _agent_http(stack: Stack, agent_id: str) -> httpx.Client:
    """An HTTPS client with the agent's own certificate."""
    bundle = stack.work / "agents" / agent_id
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    context.load_cert_chain(str(bundle / "agent.crt"), str(bundle / "agent.key"))
    return httpx.Client(base_url=stack.server.url, verify=context, timeout=15,
                        headers={"Content-Type": "application/json"})


def _report(agent_id: str, sync_id: str, **fields: Any) -> bytes:
    return json.dumps({"v": 1, "agent_id": agent_id, "sync_id": sync_id,
                       "started_at": time.time(), "reason": "manual", **fields}).encode()


def _health(stack: Stack) -> dict[str, object]:
    with stack.api() as api:
        answer = api.get("/api/v1/health")
    result: dict[str, object] = answer.json()
    return result


def test_a_retained_presence_of_the_wrong_types_does_not_cut_the_link(stack: Stack) -> None:
    stack.start_agent("good")
    stack.wait_agent("good", "online")
    bundle = stack.create_agent("evil")
    hostile = connect(stack.broker.port, stack.pki, "evil",
                      cert=(bundle / "agent.crt", bundle / "agent.key"))
    hostile.publish("epns/v1/agents/evil/presence",
                    json.dumps({"v": 1, "state": "online", "at": time.time(),
                                "route": ["x"]}).encode(), retain=True)
    time.sleep(1.5)
    assert _health(stack)["broker"] is True
    stack.wait_wakeup(stack.wake("good"), "satisfied")


def _metrics(stack: Stack) -> str:
    with stack.api() as api:
        answer = api.get("/api/v1/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text


def _metric(stack: Stack, sample: str, missing: float | None = None) -> float:
    """A sample's value; ``missing`` when given stands for a labelled sample
    not counted yet (a family shows a label once it has counted it)."""
    for line in _metrics(stack).splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    if missing is not None:
        return missing
    raise AssertionError(f"no sample {sample}")


def _birth(agent_id: str, **fields: object) -> bytes:
    return json.dumps({"v": 1, "state": "online", "at": time.time(), "route": "direct:8883",
                       **fields}).encode()


def test_a_handler_that_fails_on_one_message_does_not_end_the_link(stack: Stack) -> None:
    """A real failure inside a handler (the database refuses one agent's row,
    by a trigger the test adds): that message is dropped and counted, the link
    stays up, and the fleet's wake-ups go on."""
    stack.start_agent("good")
    stack.wait_agent("good", "online")
    bundle = stack.create_agent("victim")
    database = sqlite3.connect(stack.work / "server.db")
    database.execute("CREATE TRIGGER boom BEFORE UPDATE ON agents WHEN NEW.id = 'victim' "
                     "BEGIN SELECT RAISE(ABORT, 'injected by the test'); END")
    database.commit()
    victim = connect(stack.broker.port, stack.pki, "victim",
                     cert=(bundle / "agent.crt", bundle / "agent.key"))
    victim.publish("epns/v1/agents/victim/presence", _birth("victim"))
    stack.server.log_contains(r"message handler failed on epns/v1/agents/victim/presence")
    assert _metric(stack, 'epns_server_agent_messages_dropped_total{reason="handler_failed"}') == 1
    assert _metric(stack, "epns_server_broker_link_restarts_total") == 0
    assert _health(stack)["broker"] is True
    stack.wait_wakeup(stack.wake("good"), "satisfied")

    database.execute("DROP TRIGGER boom")
    database.commit()
    database.close()
    victim.publish("epns/v1/agents/victim/presence", _birth("victim"))
    stack.wait_agent("victim", "online")


def test_a_lost_link_comes_back_loudly_and_sends_what_was_held(
        make_stack: Callable[..., Stack]) -> None:
    # The sinks listen on loopback, which the notifier refuses unless named.
    stack = make_stack(notifications__check_interval="0.3",
                       notifications__broker_down_after="1",
                       notifications__allowed_networks="127.0.0.1/32")
    with WebhookSink() as hook, SmtpSink() as smtp:
        with stack.api() as api:
            answer = api.put("/api/v1/settings/notifications",
                             json={"webhook_url": hook.url, "smtp_host": "127.0.0.1",
                                   "smtp_port": smtp.port, "smtp_to": "ops@example.test"})
        assert answer.status_code == 200, answer.text
        agent = stack.start_agent("a1")
        stack.wait_agent("a1", "online")
        agent.log_contains(r"sync_done .*reason=connect")

        # Another client takes the server's session over: the link's own
        # connection is closed under it, and it comes back by itself.
        seen = len(stack.server.lines)
        intruder = connect_server(stack.broker.port, stack.pki)
        stack.server.log_contains(r"ERROR .*broker_link_down", after=seen)
        stack.server.log_contains(r"broker_link_up", after=seen)
        intruder.close()
        assert _metric(stack, "epns_server_broker_link_restarts_total") >= 1

        # The broker goes away: health says so and why, wake-ups are
        # accepted and held, the operator is told, and all of it is sent
        # when the broker is back.
        stack.stop_broker()
        deadline = time.monotonic() + 15
        health = _health(stack)
        while health["broker"] is not False and time.monotonic() < deadline:
            time.sleep(0.1)
            health = _health(stack)
        assert health["broker"] is False
        assert isinstance(health["broker_error"], str)
        assert health["broker_error"]
        assert isinstance(health["broker_down_since"], float)
        wakeup = stack.wake("a1")
        wait_until(lambda: any(b.get("event") == "broker_link_down" for b in hook.bodies),
              "the broker_link_down webhook")
        down = next(b for b in hook.bodies if b.get("event") == "broker_link_down")
        assert down["down_since"] == pytest.approx(health["broker_down_since"])
        assert down["reason"]
        wait_until(lambda: any("push stopped" in m["Subject"] for m in smtp.messages),
              "the broker_link_down email")
        seen = len(stack.server.lines)
        stack.start_broker()
        stack.server.log_contains(r"commands_flushed sent=1", after=seen, timeout=40)
        stack.wait_wakeup(wakeup, "satisfied", timeout=40)
        wait_until(lambda: any(b.get("event") == "broker_link_restored" for b in hook.bodies),
              "the broker_link_restored webhook")
        assert _health(stack)["broker"] is True
        assert "broker_error" not in _health(stack)


def test_budgets_refuse_a_flood_with_a_reason(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(budgets__events_per_minute="6", budgets__events_burst="3",
                       budgets__syncs_per_minute="6", budgets__syncs_burst="2",
                       budgets__inventory_bytes="4000")
    bundle = stack.create_agent("chatty")
    chatty = connect(stack.broker.port, stack.pki, "chatty",
                     cert=(bundle / "agent.crt", bundle / "agent.key"))
    seen = len(stack.server.lines)
    for n in range(10):
        chatty.publish("epns/v1/agents/chatty/evt", json.dumps(
            {"v": 1, "type": "pong", "at": time.time(), "ref": f"c{n}"}).encode())
    over = 'epns_server_agent_messages_dropped_total{reason="over_budget"}'
    wait_until(lambda: _metric(stack, over, missing=0) >= 7, "seven messages over the budget")
    time.sleep(0.5)
    # Logged once for the agent and cause, not once per message.
    lines = [line for line in stack.server.lines[seen:] if "agent_message_dropped" in line]
    assert len(lines) == 1, lines
    assert "agent=chatty reason=over_budget" in lines[0]

    with _agent_http(stack, "chatty") as client:
        big = _report("chatty", "s1", changes={"disk": "x" * 5000})
        refused = client.post("/api/v1/agents/chatty/sync", content=big)
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "inventory_over_budget"
        small = client.post("/api/v1/agents/chatty/sync",
                            content=_report("chatty", "s2", changes={"disk": "ssd"}))
        assert small.status_code == 204, small.text
        third = client.post("/api/v1/agents/chatty/sync", content=_report("chatty", "s3"))
    assert third.status_code == 429, third.text
    assert third.json()["error"]["code"] == "over_budget"
    assert float(third.headers["retry-after"]) > 0
    assert _metric(stack, 'epns_server_budget_refusals_total{budget="syncs_per_minute"}') == 1
    assert _metric(stack, 'epns_server_budget_refusals_total{budget="inventory_bytes"}') == 1
    with stack.api() as api:
        assert api.get("/api/v1/agents/chatty").json()["last_sync_result"] == "ok"


def test_a_real_agent_logs_why_its_sync_was_refused(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(budgets__syncs_per_minute="0.001", budgets__syncs_burst="1")
    agent = stack.start_agent("a1")
    agent.log_contains(r"sync_done .*reason=connect")
    stack.wait_agent("a1", "online")
    with stack.api() as api:
        assert api.post("/api/v1/wakeups", json={"agents": ["a1"]}).status_code == 202
    agent.log_contains(r"the server says: over_budget: agent 'a1' is over its budget", timeout=20)


def test_a_forged_log_line_stays_inside_its_field(stack: Stack) -> None:
    bundle = stack.create_agent("liar")
    liar = connect(stack.broker.port, stack.pki, "liar",
                   cert=(bundle / "agent.crt", bundle / "agent.key"))
    seen = len(stack.server.lines)
    liar.publish("epns/v1/agents/liar/evt", json.dumps(
        {"v": 1, "type": "wol_result", "at": time.time(),
         "ref": "x\n2026-01-01T00:00:00 INFO server_push.web.api wakeup_satisfied id=1"}).encode())
    line = stack.server.log_contains(r"agent_message_dropped agent=liar", after=seen)
    assert "event.ref" in line
    assert not any(entry.startswith("2026-01-01T00:00:00") for entry in stack.server.lines)


def test_the_reserved_name_is_refused_not_a_server_error(stack: Stack) -> None:
    with stack.api() as api:
        created = api.post("/api/v1/agents", json={"id": "epns-server"})
        token = api.post("/api/v1/enrol-tokens", json={"agent_id": "epns-server"})
    for answer in (created, token):
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_name"
        assert "reserved for the management server" in answer.json()["error"]["message"]


def test_an_agents_history_is_pruned_to_its_budget(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(budgets__history_rows="5", budgets__prune_interval="0.5",
                       budgets__syncs_burst="100")
    stack.create_agent("busy")
    stack.create_agent("quiet")
    with _agent_http(stack, "busy") as client:
        for n in range(12):
            answer = client.post("/api/v1/agents/busy/sync", content=_report("busy", f"s{n}"))
            assert answer.status_code == 204, answer.text
    wait_until(lambda: _metric(stack, "epns_server_history_rows_pruned_total") >= 8,
          "the history pruned")
    with stack.api() as api:
        busy = api.get("/api/v1/agents/busy/history").json()
        quiet = api.get("/api/v1/agents/quiet/history").json()
    assert len(busy) == 5
    assert all(line["kind"] == "sync" for line in busy)  # the newest five are kept
    assert [line["kind"] for line in quiet] == ["created"]
