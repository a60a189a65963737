"""The same server on PostgreSQL: only the database URL changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from epns import pki
from tests.server.conftest import Stack
from tests.support.postgres import available, postgres_cluster


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not available():
        pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql")
    with postgres_cluster() as url:
        yield url


def test_a_wakeup_is_satisfied_and_survives_a_restart_on_postgresql(
        make_stack: Callable[..., Stack], postgres_url: str) -> None:
    stack = make_stack(database__url=postgres_url)
    stack.server.log_contains(r"Running upgrade\s+-> 0001")
    agent = stack.start_agent("a1")
    stack.wait_agent("a1", "online")
    agent.log_contains(r"sync_done .*reason=connect")
    with stack.api() as api:
        answer = api.post("/api/v1/wakeups", json={"agents": ["a1"]},
                          headers={"Idempotency-Key": "pg-1"})
    assert answer.status_code == 202, answer.text
    wakeup_id = answer.json()["id"]
    stack.wait_wakeup(wakeup_id, "satisfied")
    stack.restart_server()
    assert stack.wakeup(wakeup_id)["counts"]["satisfied"] == 1
    with stack.api() as api:
        again = api.post("/api/v1/wakeups", json={"agents": ["a1"]},
                         headers={"Idempotency-Key": "pg-1"})
    assert again.status_code == 200
    assert again.json()["id"] == wakeup_id


def test_enrolment_races_and_approval_on_postgresql(
        make_stack: Callable[..., Stack], postgres_url: str) -> None:
    """Migration 0005 and the enrolment claim on PostgreSQL: twelve installers
    of one host name race for a token of four uses and get four distinct ids;
    an approval is accepted and its bundle fetched."""
    stack = make_stack(database__url=postgres_url)
    with stack.api() as api:
        made = api.post("/api/v1/enrol-tokens", json={"max_uses": 4}).json()
        waiting = api.post("/api/v1/enrol-tokens", json={"approval": True}).json()

    def post(body: dict[str, Any]) -> httpx.Response:
        with stack.server.client() as client:
            return client.post("/api/v1/enrol", json=body)

    bodies = [{"token": made["token"], "hostname": "pg-box", "machine": f"{n:064x}",
               "csr": pki.create_agent_csr("x")[1].decode()} for n in range(1, 13)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(post, bodies))
    assert sorted(a.status_code for a in answers) == [201] * 4 + [401] * 8, [
        a.text for a in answers]
    won = {a.json()["agent_id"] for a in answers if a.status_code == 201}
    assert len(won) == 4
    assert "pg-box" in won
    pending = post({"token": waiting["token"], "hostname": "pg-till",
                    "csr": pki.create_agent_csr("x")[1].decode()})
    assert pending.status_code == 202, pending.text
    with stack.api() as api:
        accepted = api.post(f"/api/v1/enrolments/{pending.json()['id']}/accept")
        assert api.get(f"/api/v1/enrol-tokens/{made['id']}").json()["uses"] == 4
    assert accepted.json()["agent_id"] == "pg-till"
    with stack.server.client() as client:
        bundle = client.post(pending.json()["poll"], json={"secret": pending.json()["secret"]})
    assert bundle.status_code == 201, bundle.text
