"""The client certificate reaches the sync endpoints (server_push/web/https.py).

Stock uvicorn keeps the TLS session from the application; without the
protocol subclass the certificate-only request below is a 401."""

from __future__ import annotations

import json
import ssl
import time
import uuid

import httpx

from epns import pki
from tests.server.conftest import Stack


def _report(agent_id: str) -> bytes:
    return json.dumps({"v": 1, "agent_id": agent_id, "sync_id": uuid.uuid4().hex,
                       "started_at": time.time(), "reason": "manual"}).encode()


def _client(stack: Stack, bundle_cert: str | None, bundle_key: str | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    if bundle_cert is not None:
        context.load_cert_chain(bundle_cert, bundle_key)
    return httpx.Client(base_url=stack.server.url, verify=context, timeout=10)


def test_a_client_certificate_alone_proves_the_agent(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with _client(stack, str(bundle / "agent.crt"), str(bundle / "agent.key")) as client:
        answer = client.post("/api/v1/agents/a1/sync", content=_report("a1"),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 204, answer.text
    with stack.api() as api:
        agent = api.get("/api/v1/agents/a1").json()
    assert agent["last_sync_result"] == "ok"
    assert agent["last_sync_reason"] == "manual"


def test_without_a_certificate_or_token_the_sync_is_refused(stack: Stack) -> None:
    stack.create_agent("a1")
    with _client(stack, None, None) as client:
        answer = client.post("/api/v1/agents/a1/sync", content=_report("a1"),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "no_agent_identity"


def test_the_server_certificate_of_the_management_server_is_no_agent(stack: Stack) -> None:
    server_cert, server_key = stack.pki / pki.SERVER_CERT, stack.pki / pki.SERVER_KEY
    with _client(stack, str(server_cert), str(server_key)) as client:
        answer = client.get("/api/v1/agents/epns-server/sync")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "not_an_agent"
