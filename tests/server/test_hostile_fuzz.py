"""Property-based: one agent with its own valid certificate sends generated
hostile messages (wrong types, huge and non-finite numbers, deep nesting,
long strings, control characters, lone surrogates, invalid UTF-8) on its own
presence and event topics, and posts them as sync reports, while real
wake-ups for other real agents go on. The server's broker link never drops,
health stays true, nothing answers 5xx, no handler fails, and every other
agent's wake-up is satisfied, before and after a restart of the server (the
hostile presence is retained, so it strikes again at the resubscribe).

The budgets are opened wide here so that every generated message reaches the
validation it is meant to test; ``test_hostile_agent.py`` tests the budgets.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epns import pki
from tests.server.conftest import Stack
from tests.support.clients import Client, connect

EVIL = "evil"
GOOD = ("good0", "good1")
WIDE = "1000000"

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30), st.just(10**400),
    st.floats(),  # NaN and the infinities included: json.dumps writes them as tokens
    st.text(max_size=20),
    st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=20),  # control characters
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3),  # surrogates
    st.text(alphabet="ab\n\r\t\x00\u2028", min_size=200, max_size=4000),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=6),
    max_leaves=25)
_deep = st.integers(min_value=30, max_value=6000).map(lambda n: "[" * n + "]" * n)


@st.composite
def _spoiled(draw: st.DrawFn, valid: dict[str, st.SearchStrategy[Any]]) -> bytes:
    """A valid document with one or two fields replaced by hostile values (or
    dropped): every other field passes, so the hostile one is what the server
    must catch."""
    document = draw(st.fixed_dictionaries(valid))
    for name in draw(st.lists(st.sampled_from(sorted(valid)), min_size=1, max_size=2,
                              unique=True)):
        if draw(st.integers(0, 9)) == 0:
            del document[name]
        else:
            document[name] = draw(_values)
    return json.dumps({"v": 1, **document}).encode()


def _document(valid: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Mostly spoiled documents; now and then one nested to exhaust the
    parser, raw garbage, or a valid one."""
    nested = st.tuples(st.sampled_from(sorted(valid)), _deep).map(
        lambda pair: ('{"v":1,"%s":%s}' % pair).encode())  # noqa: UP031 - a JSON fragment
    garbage = st.one_of(
        st.binary(max_size=200),
        st.just(b'{"v":1,"state":"online","at":1,"hostname":"\xff\xfe"}'),
        st.just(b'{"v":1,"type":"ack","at":1,"ref":"c\xc3"}'),
        st.just(b'{"v":1,"state":"online","at":1,"hostname":"' + b"h" * 20_000 + b'"}'),
    )
    whole = st.fixed_dictionaries(valid).map(lambda doc: json.dumps({"v": 1, **doc}).encode())
    return st.one_of(_spoiled(valid), _spoiled(valid), _spoiled(valid), _spoiled(valid),
                     nested, garbage, whole)


# Online: an offline presence (a will) keeps only its state and time.
_presence = _document({
    "state": st.just("online"), "at": st.just(time.time()),
    "route": st.just("direct:8883"), "version": st.just("1.0"), "hostname": st.just("pc"),
    "interfaces": st.just([{"address": "127.0.0.9", "prefix": 8, "mac": "aa:bb:cc:dd:ee:ff"}]),
})
_event = _document({
    "type": st.sampled_from(["ack", "reject", "sync", "wol_result", "pong"]),
    "at": st.just(time.time()), "ref": st.just("c1"),
    # A body of the right keys, each value hostile or valid.
    "body": st.fixed_dictionaries({}, optional={
        "ok": st.booleans() | _values, "detail": st.just("done") | _values,
        "reason": st.just("wake") | _values, "started_at": st.just(time.time()) | _values,
        "sync_id": st.just("s1") | _values, "wakes": st.just(["c1"]) | _values,
        "targets": _values, "errors": _values, "type": st.just("wake") | _values}),
})
_report = _document({
    "agent_id": st.just(EVIL), "sync_id": st.just("s1"), "started_at": st.just(time.time()),
    "reason": st.sampled_from(["wake", "connect", "interval"]), "wakes": st.just(["c1"]),
    "changes": st.dictionaries(st.text(max_size=8), _values, max_size=4),
    "results": st.just([{"task_id": "t1", "status": "done"}]),
})
_xml_bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
             b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><report>&b;</report>')


def _agent_client(stack: Stack, agent_id: str) -> httpx.Client:
    bundle = stack.work / "agents" / agent_id
    context = ssl.create_default_context(cafile=str(stack.pki / pki.CA_CERT))
    context.load_cert_chain(str(bundle / "agent.crt"), str(bundle / "agent.key"))
    return httpx.Client(base_url=stack.server.url, verify=context, timeout=15)


def _metrics(stack: Stack) -> str:
    with stack.api() as api:
        answer = api.get("/api/v1/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text


@pytest.mark.timeout(400)  # 100 rounds against a live server, on a loaded CI machine
def test_hostile_messages_from_one_agent_never_stop_the_fleet(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(budgets__events_per_minute=WIDE, budgets__events_burst=WIDE,
                       budgets__syncs_per_minute=WIDE, budgets__syncs_burst=WIDE,
                       wakeups__per_minute=WIDE, wakeups__burst=WIDE)
    for agent_id in GOOD:
        stack.start_agent(agent_id)
    for agent_id in GOOD:
        stack.wait_agent(agent_id, "online")
    bundle = stack.create_agent(EVIL)
    hostile: Client = connect(stack.broker.port, stack.pki, EVIL,
                              cert=(bundle / "agent.crt", bundle / "agent.key"))
    wakeups: list[str] = []
    statuses: list[int] = []

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(presence=_presence, report_event=_event, report=_report, retain=st.booleans(),
           xml=st.booleans())
    def one_round(presence: bytes, report_event: bytes, report: bytes, retain: bool,
                  xml: bool) -> None:
        hostile.publish(f"epns/v1/agents/{EVIL}/presence", presence, retain=retain)
        hostile.publish(f"epns/v1/agents/{EVIL}/evt", report_event)
        with _agent_client(stack, EVIL) as client:
            answer = client.post(f"/api/v1/agents/{EVIL}/sync",
                                 content=_xml_bomb if xml else report,
                                 headers={"content-type": "application/xml" if xml
                                          else "application/json"})
        statuses.append(answer.status_code)
        assert answer.status_code < 500, answer.text
        wakeups.append(stack.wake(GOOD[len(wakeups) % 2]))

    one_round()
    assert len(wakeups) >= 80
    for wakeup_id in wakeups:
        stack.wait_wakeup(wakeup_id, "satisfied")
    with stack.api() as api:
        assert api.get("/api/v1/health").json()["broker"] is True
    metrics = _metrics(stack)
    assert "epns_server_broker_link_restarts_total 0" in metrics
    assert 'epns_server_agent_messages_dropped_total{reason="handler_failed"} 0' in metrics
    assert 'epns_server_agent_messages_dropped_total{reason="malformed"}' in metrics
    assert {400, 413} & set(statuses), statuses
    assert not any("Traceback" in line for line in stack.server.lines)

    # The last retained presence strikes again at the resubscribe: the link
    # survives that too, and push goes on.
    stack.restart_server()
    for agent_id in GOOD:
        stack.wait_wakeup(stack.wake(agent_id), "satisfied")
    with stack.api() as api:
        assert api.get("/api/v1/health").json()["broker"] is True
    assert "epns_server_broker_link_restarts_total 0" in _metrics(stack)
