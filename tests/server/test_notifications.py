"""Offline notifications, end to end: real agents go away, the server's
notifier POSTs to a real local webhook and mails a real local SMTP sink."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.server.conftest import Stack
from tests.support.processes import wait_until
from tests.support.smtp_sink import SmtpSink
from tests.support.webhook_sink import WebhookSink

# The server config lowers the floor of offline_after (the API cannot) and
# checks often, so a test waits seconds, not minutes.
FAST = {"notifications__check_interval": "0.3", "notifications__min_offline_after": "1",
        # The sinks listen on loopback, which the notifier refuses unless named.
        "notifications__allowed_networks": "127.0.0.1/32"}


@pytest.fixture
def fast_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(**FAST)


def _configure(stack: Stack, status: int = 200, **settings: Any) -> dict[str, Any]:
    with stack.api() as api:
        answer = api.put("/api/v1/settings/notifications", json=settings)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _notified(stack: Stack, agent_id: str) -> list[str]:
    with stack.api() as api:
        history = api.get(f"/api/v1/agents/{agent_id}/history").json()
    return [h["detail"] for h in history if h["kind"] == "notified"]


def _go_offline(stack: Stack, agent_id: str, create: bool = True) -> float:
    """Start the agent, then kill it (the broker publishes its will); returns
    when the server shows it offline."""
    agent = stack.start_agent(agent_id, create=create)
    stack.wait_agent(agent_id, "online")
    # Killed after its connect sync: a sync still in flight would be heard of
    # after the will, and move "last seen" past the offline time.
    agent.log_contains(r"sync_done .*reason=connect")
    agent.stop(signal.SIGKILL)
    stack.agents.remove(agent)
    return float(stack.wait_agent(agent_id, "offline")["presence_at"])


def test_an_agent_offline_too_long_is_notified_once_per_offline_period(
        fast_stack: Stack) -> None:
    stack = fast_stack
    with WebhookSink() as hook, SmtpSink() as smtp:
        _configure(stack, offline_after=2, webhook_url=hook.url, smtp_host="127.0.0.1",
                   smtp_port=smtp.port, smtp_from="epns@example.test",
                   smtp_to="ops@example.test")
        stack.start_agent("stays")
        stack.start_agent("revoked")
        stack.wait_agent("revoked", "online")
        with stack.api() as api:
            assert api.post("/api/v1/agents/revoked/revoke", json={}).status_code == 204
        went = _go_offline(stack, "n1")

        wait_until(lambda: bool(hook.bodies) and bool(smtp.messages), "the first notifications")
        assert time.time() - went >= 2
        assert hook.bodies[0]["agent_id"] == "n1"
        assert hook.bodies[0]["presence"] == "offline"
        assert hook.bodies[0]["offline_since"] == pytest.approx(went)
        assert hook.bodies[0]["last_seen"] <= went
        mail = smtp.messages[0]
        assert "agent n1 offline since" in mail["Subject"]
        assert (mail["From"], mail["To"]) == ("epns@example.test", "ops@example.test")
        assert "Agent n1 has been offline" in str(mail.get_payload())

        time.sleep(2)  # several more rounds: nothing is repeated, nobody else is told
        assert [b["agent_id"] for b in hook.bodies] == ["n1"]
        assert len(smtp.messages) == 1
        assert sorted(d.split(":")[0] for d in _notified(stack, "n1")) == ["email", "webhook"]
        assert _notified(stack, "stays") == []
        assert _notified(stack, "revoked") == []

        # Back, and away again: a new offline period, told once more.
        _go_offline(stack, "n1", create=False)
        wait_until(lambda: len(hook.bodies) == 2 and len(smtp.messages) == 2,
              "the second period's notifications")
        assert hook.bodies[1]["offline_since"] > hook.bodies[0]["offline_since"]


def test_a_failing_channel_is_retried_and_the_notifier_survives(fast_stack: Stack) -> None:
    stack = fast_stack
    with WebhookSink() as hook, SmtpSink() as smtp:
        smtp.refuse = 2
        # Nothing listens here: a transport error, every round.
        _configure(stack, offline_after=1, webhook_url="http://127.0.0.1:9/hook",
                   smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_to="ops@example.test")
        _go_offline(stack, "n2")
        stack.server.log_contains(r"notify_channel_failed channel=webhook .*agents=n2")
        stack.server.log_contains(r"notify_channel_failed channel=email .*451")
        wait_until(lambda: len(smtp.messages) == 1, "the email, after two refusals")

        hook.statuses = [500]
        _configure(stack, offline_after=1, webhook_url=hook.url, smtp_host="127.0.0.1",
                   smtp_port=smtp.port, smtp_to="ops@example.test")
        wait_until(lambda: len(hook.bodies) == 1, "the webhook, after a 500")
        time.sleep(1)
        assert (hook.attempts, len(hook.bodies), len(smtp.messages)) == (2, 1, 1)
        stack.server.log_contains(r"notify_channel_failed channel=webhook .*answered 500")
        assert not any("notify_failed" in line for line in stack.server.lines)


def test_only_the_server_config_lowers_the_offline_floor(
        stack: Stack, fast_stack: Stack) -> None:
    refused = _configure(stack, 400, offline_after=30, min_offline_after=1)
    assert refused["error"]["message"] == "notifications: offline_after 60 s - 30 days"
    assert _configure(stack, offline_after=60)["offline_after"] == 60
    assert "offline_after 1 s" in _configure(fast_stack, 400, offline_after=0.5)[
        "error"]["message"]
    assert _configure(fast_stack, offline_after=1)["offline_after"] == 1
