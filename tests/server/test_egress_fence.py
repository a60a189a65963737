"""The fence on the notifier's webhook and SMTP host (notifications.allowed_networks,
epns.egress): the rules alone, then a real server that refuses loopback and
metadata targets when they are saved, and again at send time for a name that
resolves to loopback (as a DNS answer changed after the save would)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from epns import egress
from server_push.store.models import Agent, Setting
from tests.server.conftest import Stack
from tests.support.smtp_sink import SmtpSink
from tests.support.webhook_sink import WebhookSink

SETTING = "notifications.allowed_networks"
DEFAULT = egress.parse_networks(("0.0.0.0/0", "::/0"))


@pytest.mark.parametrize(("address", "allowed", "refused_because"), [
    ("127.0.0.1", DEFAULT, "loopback"),
    ("::1", DEFAULT, "loopback"),
    ("::ffff:127.0.0.1", DEFAULT, "127.0.0.1 is a loopback"),
    ("169.254.169.254", DEFAULT, "cloud metadata"),
    ("100.100.100.200", DEFAULT, "cloud metadata"),
    ("fd00:ec2::254", DEFAULT, "cloud metadata"),
    ("0.0.0.0", DEFAULT, "unspecified"),
    ("224.0.0.1", DEFAULT, "multicast"),
    ("198.19.2.3", egress.parse_networks(("198.18.0.0/16",)), "outside"),
    ("10.1.2.3", DEFAULT, None),
    ("192.0.2.10", DEFAULT, None),
    ("127.0.0.1", egress.parse_networks(("0.0.0.0/0", "127.0.0.1/32")), None),
    ("127.0.0.2", egress.parse_networks(("0.0.0.0/0", "127.0.0.1/32")), "loopback"),
    ("::1", egress.parse_networks(("::1/128",)), None),
])
def test_the_rules(address: str, allowed: tuple[egress.IPNetwork, ...],
                   refused_because: str | None) -> None:
    why = egress.refusal(ipaddress.ip_address(address), allowed, SETTING)
    if refused_because is None:
        assert why is None
    else:
        assert why is not None
        assert refused_because in why
        assert SETTING in why


def _put(stack: Stack, **settings: object) -> tuple[int, dict[str, object]]:
    with stack.api() as api:
        answer = api.put("/api/v1/settings/notifications", json=settings)
    body: dict[str, object] = answer.json()
    return answer.status_code, body


def test_loopback_and_metadata_targets_are_refused_when_saved_and_when_sent(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(notifications__check_interval="0.3",
                       notifications__min_offline_after="1")
    for field, value, words in (
            ("webhook_url", "http://127.0.0.1:9443/api/v1/agents", "is a loopback address"),
            ("webhook_url", "http://[::ffff:127.0.0.1]:9443/", "is a loopback address"),
            ("webhook_url", "http://169.254.169.254/latest/meta-data/", "cloud metadata"),
            ("smtp_host", "localhost", "is a loopback address"),
            ("smtp_host", "127.0.0.1", "is a loopback address")):
        status, body = _put(stack, **{field: value, "smtp_to": "ops@example.test"})
        assert status == 400, body
        error = body["error"]
        assert isinstance(error, dict)
        assert error["code"] == "target_not_allowed"
        assert field in error["message"]
        assert words in error["message"]
        assert f"{SETTING} names it" in error["message"]
    assert _put(stack, webhook_url="https://hooks.example.test/epns")[0] == 200

    # Settings naming 'localhost' stored behind the API's back: the name is
    # resolved at each send, and every address it resolves to is checked.
    now = time.time()
    with WebhookSink() as hook, SmtpSink() as smtp:
        port = hook.url.split(":")[2].split("/")[0]
        stack.insert_rows(
            (Agent, [{"id": "away", "auth": "certificate", "created_at": now - 100,
                      "groups": [], "presence": "offline", "presence_at": now - 60,
                      "last_seen": now - 60, "interfaces": [], "inventory": {},
                      "renewals": 0}]))
        _replace_setting(stack, {
            "offline_after": 1.0, "webhook_url": f"http://localhost:{port}/hook",
            "smtp_host": "localhost", "smtp_port": smtp.port, "smtp_from": "",
            "smtp_to": "ops@example.test"})
        stack.server.log_contains(
            r"notify_channel_failed channel=webhook .*the webhook refused: localhost resolves "
            r"to 127\.0\.0\.1; 127\.0\.0\.1 is a loopback address", timeout=30)
        stack.server.log_contains(
            r"notify_channel_failed channel=email .*the SMTP host refused: localhost resolves "
            r"to 127\.0\.0\.1", timeout=30)
        assert hook.bodies == []
        assert smtp.messages == []


def _replace_setting(stack: Stack, value: dict[str, object]) -> None:
    """The notifications row (saved through the API before), rewritten
    straight in the database."""
    async def write() -> None:
        engine = create_async_engine(stack.server.env["EPNS_SERVER_DATABASE__URL"])
        try:
            async with engine.begin() as connection:
                await connection.execute(update(Setting).where(Setting.key == "notifications")
                                         .values(value=value))
        finally:
            await engine.dispose()

    asyncio.run(write())
