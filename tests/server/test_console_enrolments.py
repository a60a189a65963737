"""The console's Enrolments page in a real browser: a token made in its form
(the secret shown once), a pending enrolment that shows up live, Accept
creating the agent (whose installer then gets its bundle), Reject refusing
the next one, and Revoke ending the token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from epns import pki
from tests.server.conftest import Stack
from tests.server.test_console import Console, console  # noqa: F401 - the fixture


def _request(stack: Stack, token: str, hostname: str, machine: str) -> dict[str, Any]:
    csr = pki.create_agent_csr("x")[1].decode()
    with stack.server.client() as client:
        answer = client.post("/api/v1/enrol", json={"token": token, "hostname": hostname,
                                                    "machine": machine, "csr": csr})
    assert answer.status_code == 202, answer.text
    pending: dict[str, Any] = answer.json()
    return pending


def _poll(stack: Stack, pending: dict[str, Any]) -> Any:
    with stack.server.client() as client:
        return client.post(pending["poll"], json={"secret": pending["secret"]})


def test_pending_enrolments_are_accepted_and_rejected_in_the_console(
        stack: Stack, console: Callable[[Stack], Console]) -> None:  # noqa: F811
    tab = console(stack)
    tab.login()
    page = tab.page
    page.get_by_role("link", name="Enrolments").click()
    # A token made in the console: any number of machines, each approved.
    page.fill("#token-groups", "shop")
    page.fill("#token-uses", "")
    page.check("#token-approval")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#made")).to_be_visible()
    expect(page.locator("#made-install")).to_have_value(
        "No one-line installer: set [enrol] packages_dir on the server.")
    command = page.locator("#made-enrol").input_value()
    assert command.startswith(f"epns-agent enrol --server {stack.server.url} --token ")
    token = command.split("--token ")[1].split()[0]
    with stack.api() as api:
        made = api.get("/api/v1/enrol-tokens").json()[0]
    assert (made["max_uses"], made["approval"], made["groups"]) == (None, True, ["shop"])
    tokens_row = page.locator(f"#tokens tr[data-id='{made['id']}']")
    expect(tokens_row).to_contain_text("0 of unlimited")
    first = _request(stack, token, "Front-Desk", "ab" * 32)
    row = page.locator(f"#pending tr[data-id='{first['id']}']")
    expect(row).to_contain_text("front-desk")
    expect(row).to_contain_text("127.0.0.1")
    row.get_by_role("button", name="Accept").click()
    expect(page.locator("#feedback")).to_contain_text("Accepted: agent front-desk is enrolled")
    expect(page.locator("#recent")).to_contain_text("front-desk")
    expect(page.locator("#no-pending")).to_be_visible()
    answer = _poll(stack, first)
    assert answer.status_code == 201, answer.text
    assert answer.json()["agent_id"] == "front-desk"

    # A new request appears without a reload; Reject refuses it.
    second = _request(stack, token, "intruder", "cd" * 32)
    row = page.locator(f"#pending tr[data-id='{second['id']}']")
    expect(row).to_contain_text("intruder")
    row.get_by_role("button", name="Reject").click()
    expect(page.locator("#feedback")).to_contain_text("Rejected the enrolment of intruder")
    expect(page.locator("#recent")).to_contain_text("rejected in the console")
    refused = _poll(stack, second)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "enrolment_rejected"
    with stack.api() as api:
        assert api.get("/api/v1/agents/front-desk").json()["groups"] == ["shop"]
        assert api.get("/api/v1/agents/intruder").status_code == 404
    # The token is revoked from its row; the next machine is refused.
    page.reload()
    tokens_row.get_by_role("button", name="Revoke").click()
    page.locator("dialog.confirm-action").get_by_role("button", name="Revoke token").click()
    expect(page.locator("#feedback")).to_contain_text("it enrols no one any more")
    expect(tokens_row).to_contain_text("revoked")
    expect(tokens_row).to_contain_text("1 of unlimited")
    csr = pki.create_agent_csr("x")[1].decode()
    with stack.server.client() as client:
        late = client.post("/api/v1/enrol", json={"token": token, "hostname": "late",
                                                  "csr": csr})
    assert late.json()["error"]["code"] == "enrol_token_revoked"
    assert tab.errors == []
