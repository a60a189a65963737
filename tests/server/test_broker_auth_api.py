"""The external brokers' HTTP auth and ACL endpoint, against a real server
process, with requests shaped as EMQX 5 and mosquitto-go-auth send them
(their JSON, form and GET shapes; go-auth's status, json and text response
modes)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from epns import pki, tokens
from tests.server.conftest import Stack

SECRET = "s3cret-for-the-test-broker"
BROKER_LOGIN = {"Authorization": "Basic " + base64.b64encode(
    f"broker:{SECRET}".encode()).decode()}
EMQX = "/api/v1/broker/emqx"
GO_AUTH = "/api/v1/broker/go-auth"
# go-auth's Go client; EMQX's ehttpc sends its own. Neither matters to the
# server, but the requests are theirs down to this.
GO_AUTH_HEADERS = {**BROKER_LOGIN, "User-Agent": "mosquitto-2.0.0"}


def _emqx(client: httpx.Client, path: str, shape: str, params: dict[str, str]) -> bool:
    """One EMQX request in ``shape`` (json, form or get); True when allowed."""
    url = f"{EMQX}/{path}"
    if shape == "json":
        answer = client.post(url, content=json.dumps(params), headers={
            **BROKER_LOGIN, "Content-Type": "application/json"})
    elif shape == "form":
        answer = client.post(url, data=params, headers=BROKER_LOGIN)
    else:
        answer = client.get(url, params=params, headers=BROKER_LOGIN)
    # EMQX takes any status but 200/204 as "ignore": every decision is a 200.
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["result"] in ("allow", "deny")
    if path == "authn":
        assert body["is_superuser"] is False
    return bool(body["result"] == "allow")


def _go_auth(client: httpx.Client, path: str, shape: str, params: dict[str, Any],
             mode: str = "json") -> bool:
    """One go-auth request: ``shape`` json (POST), form (POST), get-json (its
    http_method GET sends the JSON body too) or put-form."""
    url = f"{GO_AUTH}/{path}" + ("?response_mode=text" if mode == "text" else "")
    as_json: dict[str, Any] = {
        "content": json.dumps(params),
        "headers": {**GO_AUTH_HEADERS, "Content-Type": "application/json"}}
    as_form: dict[str, Any] = {"data": {k: str(v) for k, v in params.items()},
                               "headers": GO_AUTH_HEADERS}
    shapes: dict[str, tuple[str, dict[str, Any]]] = {
        "json": ("POST", as_json), "form": ("POST", as_form),
        "get-json": ("GET", as_json), "put-form": ("PUT", as_form)}
    method, options = shapes[shape]
    answer = client.request(method, url, **options)
    assert answer.status_code in (200, 403), answer.text
    allowed = answer.status_code == 200
    if mode == "text":
        assert (answer.text == "ok") is allowed
    else:
        assert answer.json()["ok"] is allowed
    return allowed


@pytest.fixture
def broker_auth_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(broker_auth__secret=SECRET, broker_auth__failure_burst="4",
                      broker_auth__failures_per_minute="1")


def _token_agent(stack: Stack, agent_id: str) -> str:
    bundle = stack.create_agent(agent_id, auth="token")
    return (bundle / "agent.token").read_text().strip()


def _signed(stack: Stack, agent_id: str, *, now: float | None = None, ttl: float = 3600,
            key: Ed25519PrivateKey | None = None) -> str:
    key = key or pki.load_signing_key(stack.pki / pki.SIGNING_KEY)
    return tokens.sign_token(key, agent_id, now=time.time() if now is None else now, ttl=ttl)


@pytest.mark.parametrize("shape", ["json", "form", "get"])
def test_emqx_authn_allows_valid_tokens_only(broker_auth_stack: Stack, shape: str) -> None:
    stack = broker_auth_stack
    good = _token_agent(stack, "t1")
    _token_agent(stack, "t2")
    revoked_agent = _token_agent(stack, "t3")
    with stack.api() as api:
        assert api.post("/api/v1/agents/t3/revoke", json={}).status_code == 204
    one_token = _signed(stack, "t2")
    jti = json.loads(tokens.b64decode(one_token.split(".")[1]))["jti"]
    with (stack.pki / pki.REVOKED).open("a") as handle:
        handle.write(f"token:{jti}\n")

    def login(username: str, password: str, clientid: str | None = None) -> bool:
        with stack.server.client() as client:
            return _emqx(client, "authn", shape, {"username": username, "password": password,
                                                  "clientid": clientid or username})

    assert login("t1", good)
    assert login("t2", _signed(stack, "t2"))  # another token of t2 is still good
    assert not login("t2", one_token)  # token:<jti> in the revocation file
    assert not login("t3", revoked_agent)  # the agent is revoked
    assert not login("t1", good + "x")  # tampered signature
    assert not login("t1", _signed(stack, "t1", key=Ed25519PrivateKey.generate()))  # forged
    assert not login("t1", _signed(stack, "t1", now=time.time() - 90_000, ttl=3600))  # expired
    assert not login("t2", good)  # t1's token with t2's name
    assert not login("t1", good, clientid="t2")  # another agent's session
    assert not login("t1", "")  # no password
    assert not login("t1", "not-a-token")
    # The server role's name is earned with its certificate, never a token.
    assert not login(pki.SERVER_CLIENT_NAME, _signed(stack, pki.SERVER_CLIENT_NAME))
    stack.server.log_contains(r"broker_auth_denied check=emqx_authn username=t3 .*revoked")


def test_go_auth_user_and_superuser(broker_auth_stack: Stack) -> None:
    stack = broker_auth_stack
    good = _token_agent(stack, "g1")
    forged = _signed(stack, "g1", key=Ed25519PrivateKey.generate())
    expired = _signed(stack, "g1", now=time.time() - 90_000, ttl=3600)
    with stack.server.client() as client:
        for shape in ("json", "form", "get-json", "put-form"):
            for mode in ("json", "text"):
                login = {"username": "g1", "password": good, "clientid": "g1"}
                assert _go_auth(client, "user", shape, login, mode), (shape, mode)
                for bad in (forged, expired, good[:-4]):
                    assert not _go_auth(client, "user", shape, {**login, "password": bad}, mode)
                # Nobody is a superuser: every access goes through the ACL.
                for name in ("g1", pki.SERVER_CLIENT_NAME):
                    assert not _go_auth(client, "superuser", shape, {"username": name}, mode)


AGENT_ACCESS = [
    # (EMQX action or go-auth acc, topic, allowed) for agent "a1" in group "g"
    ("subscribe", "epns/v1/agents/a1/cmd", True),
    ("subscribe", "epns/v1/all/cmd", True),
    ("subscribe", "epns/v1/groups/g/cmd", True),
    ("subscribe", "epns/v1/agents/a2/cmd", False),
    ("subscribe", "epns/v1/agents/+/cmd", False),
    ("subscribe", "#", False),
    ("subscribe", "$SYS/#", False),
    ("publish", "epns/v1/agents/a1/evt", True),
    ("publish", "epns/v1/agents/a1/presence", True),
    ("publish", "epns/v1/agents/a1/cmd", False),
    ("publish", "epns/v1/agents/a2/evt", False),
    ("publish", "epns/v1/all/cmd", False),
]
SERVER_ACCESS = [
    ("publish", "epns/v1/agents/a1/cmd", True),
    ("publish", "epns/v1/all/cmd", True),
    ("subscribe", "epns/v1/agents/+/evt", True),
    ("subscribe", "epns/v1/agents/+/presence", True),
    ("publish", "epns/v1/agents/a1/evt", False),
    ("subscribe", "#", False),
]
GO_AUTH_ACC = {"subscribe": 4, "publish": 2}


def test_acl_is_the_epns_contract_in_both_dialects(broker_auth_stack: Stack) -> None:
    stack = broker_auth_stack
    with stack.server.client() as client:
        for username, table in (("a1", AGENT_ACCESS), (pki.SERVER_CLIENT_NAME, SERVER_ACCESS)):
            for action, topic, allowed in table:
                params = {"username": username, "clientid": username, "topic": topic}
                for shape in ("json", "form", "get"):
                    assert _emqx(client, "authz", shape, {**params, "action": action}) is (
                        allowed), (username, action, topic, shape)
                for shape in ("json", "form", "get-json"):
                    acl = {**params, "acc": GO_AUTH_ACC[action]}
                    assert _go_auth(client, "acl", shape, acl) is allowed, (
                        username, action, topic, shape)
        # Mosquitto asks READ (1) before delivering a message, READWRITE (3) for both.
        deliver = {"username": "a1", "clientid": "a1", "topic": "epns/v1/agents/a1/cmd"}
        assert _go_auth(client, "acl", "json", {**deliver, "acc": 1})
        assert not _go_auth(client, "acl", "json", {**deliver, "acc": 2})
        assert not _go_auth(client, "acl", "json", {**deliver, "acc": 3})
        assert not _go_auth(client, "acl", "form", {**deliver, "topic": "epns/v1/agents/a2/cmd",
                                                    "acc": 1})
        assert not _go_auth(client, "acl", "json", {**deliver, "acc": 8})
        # The session must be the agent's own; unknown actions are denied.
        assert not _go_auth(client, "acl", "json", {**deliver, "clientid": "a2", "acc": 1})
        assert not _emqx(client, "authz", "json", {**deliver, "action": "all"})
        # A revoked agent loses its rights at once, not only at its next connect.
        stack.create_agent("a1")
        assert _emqx(client, "authz", "json", {**deliver, "action": "subscribe"})
        with stack.api() as api:
            assert api.post("/api/v1/agents/a1/revoke", json={}).status_code == 204
        assert not _emqx(client, "authz", "json", {**deliver, "action": "subscribe"})
        assert not _go_auth(client, "acl", "form", {**deliver, "acc": 4})


def test_the_broker_must_log_in_and_only_wrong_logins_are_throttled(
        broker_auth_stack: Stack) -> None:
    stack = broker_auth_stack
    token = _token_agent(stack, "b1")
    login = {"username": "b1", "password": token, "clientid": "b1"}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"broker:guess-guess-guess").decode()}
    with stack.server.client() as client:
        for path in (f"{EMQX}/authn", f"{EMQX}/authz", f"{GO_AUTH}/user", f"{GO_AUTH}/acl"):
            answer = client.post(path, json=login)  # no credentials at all
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "broker_unauthorized"
        # Four failures (the burst) spent: wrong credentials from this address wait ...
        for _ in range(10):
            throttled = client.post(f"{EMQX}/authn", json=login, headers=wrong)
            assert throttled.status_code == 429
            assert int(throttled.headers["Retry-After"]) >= 1
        # ... but the broker, at the same address with the right ones, is let
        # through: somebody else's failures there cannot deny every agent.
        assert _emqx(client, "authn", "json", login)
        assert _go_auth(client, "user", "form", login)
    stack.server.log_contains(r"broker_auth_bad_login peer=127\.0\.0\.1")


def test_bad_agent_credentials_through_the_broker_deny_no_other_agent(
        broker_auth_stack: Stack) -> None:
    """Ten agents' bad tokens, sent by the broker with its right login, are
    each denied, and cost the good agent behind the same broker nothing."""
    stack = broker_auth_stack
    good = _token_agent(stack, "g1")
    with stack.server.client() as broker:
        for n in range(10):
            assert not _emqx(broker, "authn", "json", {
                "username": f"g{n}", "password": f"not-a-token-{n}", "clientid": f"g{n}"})
            assert not _go_auth(broker, "user", "json", {
                "username": "g1", "password": good + "x", "clientid": "g1"})
        assert _emqx(broker, "authn", "json", {"username": "g1", "password": good,
                                               "clientid": "g1"})
        assert _go_auth(broker, "user", "json", {"username": "g1", "password": good,
                                                 "clientid": "g1"})


def test_the_endpoint_is_off_without_a_secret(stack: Stack) -> None:
    with stack.server.client() as client:
        answer = client.post(f"{EMQX}/authn", json={"username": "x", "password": "y"},
                             headers=BROKER_LOGIN)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "broker_auth_off"
