"""The REST API's refusals: authentication, the one error body, validation,
the wake-up rate limit, and an OpenAPI document that says all of it."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from epns import pki, tokens
from epns.sync_contract import SyncReason, TaskResult, TaskStatus
from tests.server.conftest import Stack

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def _refusal(answer: httpx.Response, status: int, code: str) -> str:
    """Assert the one error body; its message."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error"}
    assert (body["error"]["status"], body["error"]["code"]) == (status, code), body
    message: str = body["error"]["message"]
    return message


# --- authentication ------------------------------------------------------------------


def test_no_token_and_a_wrong_token_are_401(stack: Stack) -> None:
    with stack.server.client() as anonymous, stack.server.client("epns_forged") as forged:
        missing = anonymous.get("/api/v1/agents")
        wrong = forged.get("/api/v1/agents")
    assert "Bearer" in _refusal(missing, 401, "unauthorized")
    _refusal(wrong, 401, "bad_token")


def test_a_revoked_api_token_is_401(stack: Stack) -> None:
    with stack.api() as api:
        created = api.post("/api/v1/tokens", json={"name": "integration",
                                                   "ttl": 3600}).json()
        too_short = api.post("/api/v1/tokens", json={"name": "brief", "ttl": 5})
    assert created["expires_at"] > time.time() + 3500
    assert "ttl" in _refusal(too_short, 422, "invalid_request")
    with stack.server.client(created["token"]) as integration:
        assert integration.get("/api/v1/agents").status_code == 200
        with stack.api() as api:
            assert api.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
            again = api.delete(f"/api/v1/tokens/{created['id']}")
            listed = {t["id"]: t for t in api.get("/api/v1/tokens").json()}
        _refusal(integration.get("/api/v1/agents"), 401, "bad_token")
    assert "revoked already" in _refusal(again, 409, "token_revoked")
    assert listed[created["id"]]["state"] == "revoked"
    assert listed[created["id"]]["last_used"] is not None


# --- the one error body ----------------------------------------------------------------


def test_unknown_agent_invalid_id_unknown_route_and_method_share_the_body(
        stack: Stack) -> None:
    with stack.api() as api:
        unknown = api.get("/api/v1/agents/nobody")
        invalid = api.get("/api/v1/agents/-not-a-name")
        no_route = api.get("/api/v1/nothing-here")
        no_method = api.patch("/api/v1/wakeups")
        no_json = api.post("/api/v1/tokens", content=b'{"name": ',
                           headers={"Content-Type": "application/json"})
    assert "nobody" in _refusal(unknown, 404, "unknown_agent")
    assert "agent_id" in _refusal(invalid, 422, "invalid_request")
    _refusal(no_route, 404, "not_found")
    _refusal(no_method, 405, "method_not_allowed")
    _refusal(no_json, 422, "invalid_request")


def test_settings_with_an_infinite_number_are_400(stack: Stack) -> None:
    # Python's JSON reader accepts Infinity and 1e400; int() of them overflows.
    with stack.api() as api:
        for section, body in (("wol", b'{"ports": [Infinity]}'),
                              ("hints", b'{"keepalive": {"proxy": 1e400}}'),
                              ("notifications", b'{"smtp_port": -Infinity}')):
            answer = api.put(f"/api/v1/settings/{section}", content=body,
                             headers={"Content-Type": "application/json"})
            _refusal(answer, 400, "invalid_settings")


# --- wake-ups --------------------------------------------------------------------------


def test_a_wakeup_with_two_targets_is_400(stack: Stack) -> None:
    stack.create_agent("a1", groups=("g",))
    with stack.api() as api:
        answer = api.post("/api/v1/wakeups", json={"agents": ["a1"], "group": "g"})
    assert "exactly one" in _refusal(answer, 400, "bad_target")


def test_an_idempotency_key_replay_is_200_with_the_same_id(stack: Stack) -> None:
    stack.create_agent("a1")
    key = {"Idempotency-Key": "nightly-42"}
    with stack.api() as api:
        first = api.post("/api/v1/wakeups", json={"agents": ["a1"]}, headers=key)
        again = api.post("/api/v1/wakeups", json={"agents": ["a1"]}, headers=key)
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]


def test_wakeups_beyond_the_burst_are_429_with_retry_after(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(wakeups__burst="2", wakeups__per_minute="1")
    stack.create_agent("a1")
    with stack.api() as api:
        answers = [api.post("/api/v1/wakeups", json={"agents": ["a1"]}) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [202, 202]
    _refusal(answers[2], 429, "too_many_requests")
    # One request a minute refills the bucket: the next token is a minute away.
    assert 30 <= int(answers[2].headers["Retry-After"]) <= 60


def test_a_bucket_that_never_refills_asks_to_retry_in_a_day(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(wakeups__burst="1", wakeups__per_minute="0")
    stack.create_agent("a1")
    with stack.api() as api:
        answers = [api.post("/api/v1/wakeups", json={"agents": ["a1"]}) for _ in range(2)]
    assert answers[0].status_code == 202, answers[0].text
    _refusal(answers[1], 429, "too_many_requests")
    assert answers[1].headers["Retry-After"] == "86400"


# --- the OpenAPI document ----------------------------------------------------------------


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", operation)
            for path, item in document["paths"].items() for method, operation in item.items()]


def test_the_openapi_document_declares_bearer_auth_and_the_error_body(stack: Stack) -> None:
    with stack.server.client() as anonymous:
        refused = anonymous.get("/api/v1/openapi.json")
        assert refused.status_code == 401, refused.text
    with stack.api() as api:
        document = api.get("/api/v1/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiToken"] == {"type": "http", "scheme": "bearer",
                                   "description": schemes["apiToken"]["description"]}
    assert schemes["agentToken"]["scheme"] == "bearer"
    operations = dict(_operations(document))
    assert operations["POST /api/v1/wakeups"]["security"] == [{"apiToken": []}]
    assert operations["GET /api/v1/agents/{agent_id}/sync"]["security"] == [{"agentToken": []}]
    assert "security" not in operations["GET /api/v1/health"]
    assert set(operations["POST /api/v1/wakeups"]["responses"]) >= {
        "400", "401", "404", "409", "422", "429", "503"}
    # Every refusal any operation declares is the one error body.
    for name, operation in operations.items():
        for status, response in operation["responses"].items():
            if status[0] in "45":
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR_BODY, f"{name} {status}: {schema}"


# --- PostgreSQL ------------------------------------------------------------------------


def _report(agent_id: str, sync_id: str, results: tuple[TaskResult, ...] = ()) -> bytes:
    """A report as a hostile agent may write it: by hand, since the contract's
    own encoder refuses what no database can store."""
    return json.dumps({"v": 1, "agent_id": agent_id, "sync_id": sync_id,
                       "started_at": time.time(), "reason": SyncReason.MANUAL.value,
                       "results": [{"task_id": r.task_id, "status": r.status.value,
                                    "detail": r.detail} for r in results]}).encode()


def test_a_nul_character_is_a_refusal_not_a_database_error_on_postgresql(
        make_stack: Callable[..., Stack], postgres_url: str) -> None:
    # SQLite stores a NUL in text; PostgreSQL refuses it, which was a 500.
    stack = make_stack(database__url=postgres_url)
    stack.create_agent("a1")
    with stack.api() as api:
        token = api.post("/api/v1/tokens", json={"name": "ci\x00"})
        revoke = api.post("/api/v1/agents/a1/revoke", json={"reason": "stolen\x00"})
        task_id = api.post("/api/v1/agents/a1/tasks", json={"type": "inventory"}).json()["id"]
    assert "name" in _refusal(token, 422, "invalid_request")
    assert "reason" in _refusal(revoke, 422, "invalid_request")
    key = pki.load_signing_key(stack.pki / pki.SIGNING_KEY)
    agent_token = tokens.sign_token(key, "a1", now=time.time(), ttl=600)
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    nul_detail = TaskResult(task_id, TaskStatus.DONE, "inventory\x00sent")
    done = TaskResult(task_id, TaskStatus.DONE, "inventory sent")
    with httpx.Client(base_url=stack.server.url, verify=context, timeout=15,
                      headers={"Authorization": f"Bearer {agent_token}",
                               "Content-Type": "application/json"}) as agent:
        bad_id = agent.post("/api/v1/agents/a1/sync", content=_report("a1", "sync\x00"))
        bad_detail = agent.post("/api/v1/agents/a1/sync",
                                content=_report("a1", "s1", (nul_detail,)))
        result = agent.post("/api/v1/agents/a1/sync", content=_report("a1", "s2", (done,)))
    assert "report.sync_id" in _refusal(bad_id, 400, "bad_report")
    assert "report.results[0].detail: holds a NUL character" in _refusal(
        bad_detail, 400, "bad_report")
    assert result.status_code == 204, result.text
    with stack.api() as api:
        tasks = api.get("/api/v1/agents/a1/tasks").json()
    assert [(t["state"], t["detail"]) for t in tasks] == [("done", "inventory sent")]


def test_an_oversized_api_body_is_413_declared_or_streamed(stack: Stack) -> None:
    big = b'{"name": "' + b"x" * (300 * 1024) + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 16 * 1024):
            yield big[start:start + 16 * 1024]

    with stack.api() as api:
        declared = api.post("/api/v1/tokens", content=big,
                            headers={"Content-Type": "application/json"})
        streamed = api.post("/api/v1/tokens", content=chunks(),
                            headers={"Content-Type": "application/json"})
        after = api.get("/api/v1/health")
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "payload_too_large"
    assert after.status_code == 200


def test_racing_creates_of_one_agent_give_one_201_and_409s(stack: Stack) -> None:
    def create(_: int) -> int:
        with stack.api() as api:
            return api.post("/api/v1/agents", json={"id": "racer"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(create, range(8)))
    assert statuses == [201] + [409] * 7
