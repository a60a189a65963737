"""Expiry in the console, in a real browser: the agents list and the agent
page show when each identity expires, with a badge for those that expire
within identity.expiring_soon."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import expect

from tests.server.conftest import Stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture


def test_expiring_identities_carry_a_badge(
        make_stack: Callable[..., Stack], console: Callable[[Stack], Console],  # noqa: F811
) -> None:
    stack = make_stack(identity__certificate_lifetime="3600",
                       identity__token_lifetime=str(20 * 86400),
                       identity__expiring_soon=str(3 * 86400))
    stack.create_agent("soon")
    stack.create_agent("later", auth="token")
    tab = console(stack)
    tab.login()
    soon = tab.page.locator('tr[data-agent-id="soon"] td.expiry')
    later = tab.page.locator('tr[data-agent-id="later"] td.expiry')
    expect(soon.locator(".badge")).to_have_text("expires in < 1 day")
    expect(later).to_contain_text(re.compile(r"\d"))
    expect(later.locator(".badge")).to_have_count(0)

    tab.page.goto(f"{tab.url}/console/agents/soon")
    expect(tab.page.locator("#expiry .badge")).to_have_text("expires in < 1 day")
    tab.page.goto(f"{tab.url}/console/agents/later")
    expect(tab.page.locator("#expiry")).to_contain_text(re.compile(r"\d"))
    expect(tab.page.locator("#expiry .badge")).to_have_count(0)
    assert tab.errors == []
