"""The same server on PostgreSQL: only the database URL changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

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
