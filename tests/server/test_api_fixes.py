"""Issue 20's API fixes: a repeated query parameter is a list (it kept only
its last value), and an Idempotency-Key sent again with another body is 422
(it answered with the first wake-up, as if the body were the same)."""

from __future__ import annotations

from epns import pki
from tests.server.conftest import Stack


def test_repeated_agents_in_a_wol_preflight_are_all_checked(stack: Stack) -> None:
    for agent_id in ("pc-1", "pc-2", "pc-3"):
        stack.create_agent(agent_id)
    with stack.api() as api:
        repeated = api.get("/api/v1/wol/preflight?agents=pc-1&agents=pc-2")
        mixed = api.get("/api/v1/wol/preflight?agents=pc-1,pc-2&agents=pc-3"
                        "&targets=192.0.2.9/24&targets=198.18.0.9/24")
    assert repeated.status_code == 200, repeated.text
    assert [check["agent_id"] for check in repeated.json()] == ["pc-1", "pc-2"]
    assert mixed.status_code == 200, mixed.text
    assert [check["agent_id"] or check["address"] for check in mixed.json()] == [
        "pc-1", "pc-2", "pc-3", "192.0.2.9", "198.18.0.9"]


def test_repeated_states_list_enrolments_in_any_of_them(stack: Stack) -> None:
    with stack.api() as api:
        direct = api.post("/api/v1/enrol-tokens", json={"max_uses": 1}).json()
        approved = api.post("/api/v1/enrol-tokens", json={"approval": True}).json()
    with stack.server.client() as client:
        for token, host in ((direct, "box-1"), (approved, "box-2")):
            answer = client.post("/api/v1/enrol", json={
                "token": token["token"], "hostname": host,
                "csr": pki.create_agent_csr("x")[1].decode()})
            assert answer.status_code in (201, 202), answer.text
    with stack.api() as api:
        both = api.get("/api/v1/enrolments?state=pending&state=enrolled").json()
        one_token = api.get(f"/api/v1/enrolments?token={direct['id']}"
                            f"&token={approved['id']}&state=pending").json()
    assert sorted(row["state"] for row in both) == ["enrolled", "pending"]
    assert [row["state"] for row in one_token] == ["pending"]


def test_an_idempotency_key_with_another_body_is_422(stack: Stack) -> None:
    stack.create_agent("a1")
    stack.create_agent("a2")
    key = {"Idempotency-Key": "nightly-1"}
    with stack.api() as api:
        first = api.post("/api/v1/wakeups", json={"agents": ["a1"]}, headers=key)
        again = api.post("/api/v1/wakeups", json={"agents": ["a1"]}, headers=key)
        other_agent = api.post("/api/v1/wakeups", json={"agents": ["a2"]}, headers=key)
        other_ttl = api.post("/api/v1/wakeups", json={"agents": ["a1"], "ttl": 60},
                             headers=key)
        same_default_ttl = api.post("/api/v1/wakeups", json={"agents": ["a1"], "ttl": 900},
                                    headers=key)
        listed = api.get("/api/v1/wakeups").json()
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    for answer in (other_agent, other_ttl):
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert first.json()["id"] in error["message"]
    # 900 s is the default TTL: the same request, spelt out.
    assert same_default_ttl.status_code == 200, same_default_ttl.text
    assert [wakeup["id"] for wakeup in listed] == [first.json()["id"]]
