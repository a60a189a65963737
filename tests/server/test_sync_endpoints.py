"""The agents' sync endpoints over real HTTPS (server_push/web/sync_api.py):
identity, isolation, hostile bodies, the size limit, admission control, both
formats, and tasks from queue to result."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from epns import pki, tokens
from epns.sync_contract import (
    SyncFormat,
    SyncReason,
    SyncReport,
    TaskResult,
    TaskStatus,
    decode_reply,
    encode_report,
)
from tests.server.conftest import Stack

JSON = {"Content-Type": "application/json"}
XML = {"Content-Type": "application/xml"}

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE report [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<report><v type="int">1</v><agent_id>a1</agent_id><sync_id>&lol9;</sync_id></report>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE report [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<report><v type="int">1</v><agent_id>a1</agent_id><sync_id>&secret;</sync_id></report>"""


def _report(agent_id: str, fmt: SyncFormat = SyncFormat.JSON,
            results: tuple[TaskResult, ...] = ()) -> bytes:
    return encode_report(SyncReport(agent_id=agent_id, sync_id=uuid.uuid4().hex,
                                    started_at=time.time(), reason=SyncReason.MANUAL,
                                    changes={"hostname": f"{agent_id}.test"},
                                    results=results), fmt)


def _context(stack: Stack, bundle: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    if bundle is not None:
        context.load_cert_chain(bundle / "agent.crt", bundle / "agent.key")
    return context


def _as_agent(stack: Stack, bundle: Path | None = None,
              token: str | None = None) -> httpx.Client:
    """A client proven by the bundle's certificate, or by a token, or by nothing."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=stack.server.url, verify=_context(stack, bundle),
                        headers=headers, timeout=15)


def _agent_token(stack: Stack, agent_id: str) -> str:
    key = pki.load_signing_key(stack.pki / pki.SIGNING_KEY)
    return tokens.sign_token(key, agent_id, now=time.time(), ttl=600)


def _sync(agent_id: str) -> str:
    return f"/api/v1/agents/{agent_id}/sync"


def _refusal(answer: httpx.Response, status: int, code: str) -> str:
    """Assert the one error body; its message."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["status"], error["code"]) == (status, code), error
    message: str = error["message"]
    return message


# --- identity ----------------------------------------------------------------------


def test_without_an_identity_the_sync_is_401(stack: Stack) -> None:
    stack.create_agent("a1")
    with _as_agent(stack) as client:
        answer = client.post(_sync("a1"), content=_report("a1"), headers=JSON)
    assert "certificate" in _refusal(answer, 401, "no_agent_identity")


def test_an_agent_cannot_touch_another_agents_resource(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    stack.create_agent("a2")
    with _as_agent(stack, bundle) as by_cert, \
            _as_agent(stack, token=_agent_token(stack, "a1")) as by_token:
        report = by_cert.post(_sync("a2"), content=_report("a2"), headers=JSON)
        reply = by_token.get(_sync("a2"))
    _refusal(report, 403, "other_agent")
    _refusal(reply, 403, "other_agent")


def test_a_revoked_agent_is_401(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with stack.api() as api:
        assert api.post("/api/v1/agents/a1/revoke", json={}).status_code == 204
    with _as_agent(stack, bundle) as by_cert, \
            _as_agent(stack, token=_agent_token(stack, "a1")) as by_token:
        _refusal(by_cert.get(_sync("a1")), 401, "agent_revoked")
        _refusal(by_token.get(_sync("a1")), 401, "agent_revoked")


# --- hostile and malformed bodies ----------------------------------------------------


def test_an_xml_bomb_is_400_and_the_server_carries_on(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with _as_agent(stack, bundle) as client:
        bomb = client.post(_sync("a1"), content=BILLION_LAUGHS, headers=XML)
        after = client.post(_sync("a1"), content=_report("a1"), headers=JSON)
    assert "DTD" in _refusal(bomb, 400, "bad_report")
    assert after.status_code == 204, after.text


def test_an_external_entity_is_400_and_nothing_is_read(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with _as_agent(stack, bundle) as client:
        answer = client.post(_sync("a1"), content=EXTERNAL_ENTITY, headers=XML)
    message = _refusal(answer, 400, "bad_report")
    assert "entity" in message
    assert "root:" not in answer.text


def test_malformed_json_is_400(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with _as_agent(stack, bundle) as client:
        answer = client.post(_sync("a1"), content=b'{"v": 1, "agent_id": ', headers=JSON)
    assert "not JSON" in _refusal(answer, 400, "bad_report")


def test_a_wrong_content_type_is_400_naming_the_accepted_ones(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with _as_agent(stack, bundle) as client:
        answer = client.post(_sync("a1"), content=_report("a1"),
                             headers={"Content-Type": "text/plain"})
    message = _refusal(answer, 400, "bad_report")
    assert "application/json" in message
    assert "application/xml" in message


def test_a_body_over_the_limit_is_413_declared_or_chunked(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sync__max_body="4096")
    bundle = stack.create_agent("a1")
    too_big = b"x" * 5000

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the server has to count as the body arrives.
        for start in range(0, len(too_big), 1000):
            yield too_big[start:start + 1000]

    with _as_agent(stack, bundle) as client:
        declared = client.post(_sync("a1"), content=too_big, headers=JSON)
        chunked = client.post(_sync("a1"), content=chunks(), headers=JSON)
        within = client.post(_sync("a1"), content=_report("a1"), headers=JSON)
    assert "4096" in _refusal(declared, 413, "payload_too_large")
    assert "content-length" not in chunked.request.headers
    assert "4096" in _refusal(chunked, 413, "payload_too_large")
    assert within.status_code == 204, within.text


# --- admission control ---------------------------------------------------------------


def _slow_report(stack: Stack, bundle: Path, body: bytes) -> ssl.SSLSocket:
    """Start a report and send all but its last byte: it holds a sync slot."""
    host, port = stack.server.url.removeprefix("https://").split(":")
    raw = socket.create_connection((host, int(port)), timeout=15)
    tls = _context(stack, bundle).wrap_socket(raw, server_hostname=host)
    tls.sendall(f"POST {_sync('a1')} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                .encode() + body[:-1])
    return tls


def _status_line(tls: ssl.SSLSocket) -> bytes:
    received = b""
    while b"\r\n" not in received:
        chunk = tls.recv(1024)
        assert chunk, f"connection closed after {received!r}"
        received += chunk
    return received.split(b"\r\n", 1)[0]


def test_a_sync_beyond_max_concurrent_is_429_with_retry_after(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sync__max_concurrent="1", sync__queue_wait="0")
    bundle = stack.create_agent("a1")
    body = _report("a1")
    held = _slow_report(stack, bundle, body)
    try:
        with _as_agent(stack, bundle) as client:
            # The held report takes its slot once the server has checked its
            # certificate; until then a second sync may still get in.
            deadline = time.monotonic() + 10
            shed = client.get(_sync("a1"))
            while shed.status_code != 429 and time.monotonic() < deadline:
                time.sleep(0.05)
                shed = client.get(_sync("a1"))
            _refusal(shed, 429, "busy")
            # sync.retry_after (10 s) spread by a jitter of 1-2x, so a storm drains.
            assert 10 <= int(shed.headers["Retry-After"]) <= 20
            held.sendall(body[-1:])
            assert _status_line(held) == b"HTTP/1.1 204 No Content"
            assert client.get(_sync("a1")).status_code == 200
    finally:
        held.close()


def test_a_sync_beyond_max_concurrent_waits_for_a_slot_within_queue_wait(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(sync__max_concurrent="1", sync__queue_wait="20")
    bundle = stack.create_agent("a1")
    body = _report("a1")
    held = _slow_report(stack, bundle, body)
    try:
        time.sleep(1.0)  # the held report passes its certificate check and takes the slot
        with _as_agent(stack, bundle) as client, ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(client.get, _sync("a1"))
            time.sleep(1.5)
            assert not waiting.done(), "the second sync did not wait for the slot"
            held.sendall(body[-1:])
            assert _status_line(held) == b"HTTP/1.1 204 No Content"
            reply = waiting.result(timeout=15)
            # Served once the slot came free, not refused and sent away for 10-20 s.
            assert reply.status_code == 200, reply.text
            assert time.monotonic() - started >= 1.5
    finally:
        held.close()


# --- formats and tasks ----------------------------------------------------------------


def test_an_xml_report_is_accepted_and_the_reply_comes_back_in_xml(stack: Stack) -> None:
    bundle = stack.create_agent("a1")
    with _as_agent(stack, bundle) as client:
        report = client.post(_sync("a1"), content=_report("a1", SyncFormat.XML), headers=XML)
        reply = client.get(_sync("a1"), headers={"Accept": "application/xml"})
    assert report.status_code == 204, report.text
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/xml")
    assert decode_reply(reply.content, SyncFormat.XML).sync_interval == 600.0
    with stack.api() as api:
        assert api.get("/api/v1/agents/a1").json()["last_sync_result"] == "ok"


def test_a_task_is_handed_out_at_sync_and_closed_by_the_next_report(stack: Stack) -> None:
    stack.create_agent("a1")
    with stack.api() as api:
        queued = api.post("/api/v1/agents/a1/tasks", json={"type": "inventory"})
    assert queued.status_code == 201, queued.text
    task_id = queued.json()["id"]
    with _as_agent(stack, token=_agent_token(stack, "a1")) as client:
        reply = client.get(_sync("a1"))
        handed = decode_reply(reply.content).tasks
        assert [(t.id, t.type) for t in handed] == [(task_id, "inventory")]
        done = TaskResult(task_id, TaskStatus.DONE, "inventory sent")
        closed = client.post(_sync("a1"), content=_report("a1", results=(done,)),
                             headers=JSON)
        assert closed.status_code == 204, closed.text
        assert decode_reply(client.get(_sync("a1")).content).tasks == ()
    with stack.api() as api:
        tasks = api.get("/api/v1/agents/a1/tasks").json()
    assert [(t["id"], t["state"], t["detail"]) for t in tasks] == [
        (task_id, "done", "inventory sent")]


def test_a_task_the_reply_cannot_carry_is_refused_and_syncs_go_on(stack: Stack) -> None:
    stack.create_agent("a1")
    json_only = {"Content-Type": "application/json"}
    with stack.api() as api:
        # Python's JSON reader takes Infinity; the sync reply cannot carry it.
        infinite = api.post("/api/v1/agents/a1/tasks", headers=json_only,
                            content=b'{"type": "inventory", "body": {"x": Infinity}}')
        control = api.post("/api/v1/agents/a1/tasks",
                           json={"type": "inventory", "body": {"x": "\u0001"}})
        too_often = api.post("/api/v1/agents/a1/tasks",
                             json={"type": "set_config", "body": {"sync_interval": 5}})
    for answer in (infinite, control, too_often):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "bad_task_body"
    with _as_agent(stack, token=_agent_token(stack, "a1")) as client:
        for accept in ("application/json", "application/xml"):
            reply = client.get(_sync("a1"), headers={"Accept": accept})
            assert reply.status_code == 200, reply.text


def test_a_sync_that_comes_before_the_ack_delivers_once_in_the_history(stack: Stack) -> None:
    """The agent's sync can reach the server before its ack does (the ack
    goes through the broker). The wake-up is satisfied, and the history says
    delivered exactly once, before the sync that satisfied it."""
    bundle = stack.create_agent("race-1")
    wakeup = stack.wake("race-1")  # the agent is not running: no ack will come
    assert stack.wakeup(wakeup)["counts"]["requested"] == 1
    with _as_agent(stack, bundle) as agent:
        answer = agent.post(_sync("race-1"), content=_report("race-1"),
                            headers={"Content-Type": "application/json"})
    assert answer.status_code == 204, answer.text
    assert stack.wakeup(wakeup)["counts"]["satisfied"] == 1
    with stack.api() as api:
        history = api.get("/api/v1/agents/race-1/history").json()
    kinds = [line["kind"] for line in reversed(history)]
    assert kinds.count("wake_delivered") == 1, kinds
    assert kinds.index("wake_requested") < kinds.index("wake_delivered") < kinds.index("sync")
