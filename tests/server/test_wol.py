"""Wake-on-LAN dispatch, end to end: real broker, server and agents.

SAFETY: every magic packet in this file goes to 127.0.0.1, to UDP ports the
test itself listens on. Requests name the target's address as 127.0.0.1/8 and
override the relays' destinations with ``"addresses": ["127.0.0.1"]``, so no
subnet broadcast (not even 127.255.255.255) is derived; the server's own
addresses on the settings page are empty unless a test sets ["127.0.0.1"].
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from epns.wol import magic_packet
from tests.server.conftest import Stack

LOOPBACK = "127.0.0.1"
MAC = "aa:bb:cc:dd:ee:42"
TARGET: dict[str, Any] = {"mac": MAC, "address": LOOPBACK, "prefix": 8}

Listen = Callable[[], tuple[socket.socket, int]]


@pytest.fixture
def listen() -> Iterator[Listen]:
    """Open UDP sockets on 127.0.0.1 (standing in for ports 7 and 9)."""
    opened: list[socket.socket] = []

    def make() -> tuple[socket.socket, int]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.5)
        opened.append(sock)
        return sock, sock.getsockname()[1]

    yield make
    for sock in opened:
        sock.close()


def _received(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """``count`` datagrams from ``sock``, then whatever else is already queued."""
    datagrams: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            datagrams.append(sock.recv(4096))
        except TimeoutError:
            if len(datagrams) >= count:
                return datagrams
    return datagrams


def _assert_magic(datagrams: list[bytes], count: int) -> None:
    assert len(datagrams) == count
    mac = bytes.fromhex(MAC.replace(":", ""))
    for datagram in datagrams:
        assert len(datagram) == 102
        assert datagram == b"\xff" * 6 + mac * 16 == magic_packet(MAC)


def _post(stack: Stack, status: int = 202, **body: Any) -> dict[str, Any]:
    with stack.api() as api:
        answer = api.post("/api/v1/wol", json=body)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _get(stack: Stack, path: str, status: int = 200) -> Any:
    with stack.api() as api:
        answer = api.get(path)
    assert answer.status_code == status, answer.text
    return answer.json()


def _settings(stack: Stack, **wol: Any) -> None:
    with stack.api() as api:
        answer = api.put("/api/v1/settings/wol", json=wol)
    assert answer.status_code == 200, answer.text


def _wait(stack: Stack, request_id: str, done: Callable[[dict[str, Any]], bool],
          timeout: float = 20.0) -> dict[str, Any]:
    """Poll the request until ``done`` says so."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = _get(stack, f"/api/v1/wol/{request_id}")
        if done(seen):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"Wake-on-LAN request {request_id} did not get there: {seen}")


def _history(stack: Stack, agent_id: str) -> list[str]:
    lines = _get(stack, f"/api/v1/agents/{agent_id}/history")
    return [f"{line['kind']}: {line['detail']}" for line in lines]


def _audit(stack: Stack, ref: str) -> dict[str, Any]:
    entries = [e for e in _get(stack, "/api/v1/audit") if e["ref"] == ref]
    assert len(entries) == 1, entries
    entry: dict[str, Any] = entries[0]
    return entry


def test_a_relay_sends_magic_packets_reports_them_and_the_target_is_not_woken(
        stack: Stack, listen: Listen) -> None:
    _settings(stack, timeout=10)  # the shortest a request may wait
    (sock_7, port_7), (sock_9, port_9) = listen(), listen()
    stack.start_agent("relay1")
    stack.wait_agent("relay1", "online")

    created = _post(stack, targets=[TARGET], addresses=[LOOPBACK], ports=[port_7, port_9])

    [request] = created["requests"]
    assert request["state"] == "sent"
    assert request["subnet"] == "127.0.0.0/8"
    assert request["relays"] == ["relay1"]
    assert request["warning"] is None
    [send] = request["sends"]
    assert (send["by"], send["to"], send["ports"]) == ("relay1", [LOOPBACK], [port_7, port_9])
    _assert_magic(_received(sock_7, 3), 3)  # repeat 3 (settings), 6 x FF + 16 x MAC
    _assert_magic(_received(sock_9, 3), 3)
    reported = _wait(stack, request["id"], lambda r: r["sends"][0]["result"] is not None)
    result = reported["sends"][0]["result"]
    assert result["ok"] is True
    assert result["targets"] == [{"mac": MAC, "packets": 6, "errors": [],
                                  "sent": [f"{LOOPBACK}:{port_7}", f"{LOOPBACK}:{port_9}"]}]
    assert any(line.startswith("wol_relayed: ") for line in _history(stack, "relay1"))

    ended = _wait(stack, request["id"], lambda r: r["state"] != "sent", timeout=20)
    assert ended["state"] == "not_woken"
    assert ended["woke_at"] is None
    assert time.time() >= ended["deadline"]
    assert _audit(stack, request["id"])["outcome"] == "not woken within 10 s"


def test_the_request_becomes_woke_when_the_target_agent_comes_online(
        stack: Stack, listen: Listen) -> None:
    sock, port = listen()
    stack.start_agent("relay1")
    stack.wait_agent("relay1", "online")
    stack.create_agent("sleeper")  # enrolled, never started: it is "asleep"

    # The MAC is given: a CI machine may have only loopback, which has none.
    created = _post(stack, targets=[{"agent": "sleeper", **TARGET}], addresses=[LOOPBACK],
                    ports=[port])

    [request] = created["requests"]
    assert (request["agent_id"], request["mac"], request["relays"]) == (
        "sleeper", MAC, ["relay1"])
    _assert_magic(_received(sock, 3), 3)
    _wait(stack, request["id"], lambda r: r["sends"][0]["result"] is not None)
    assert _get(stack, f"/api/v1/wol/{request['id']}")["state"] == "sent"

    stack.start_agent("sleeper", create=False)
    woke = _wait(stack, request["id"], lambda r: r["state"] != "sent")
    assert woke["state"] == "woke"
    assert request["created_at"] < woke["woke_at"] <= woke["deadline"]
    history = _history(stack, "sleeper")
    assert any(line.startswith("wol_requested: by token:tests; relays relay1")
               for line in history)
    assert any(line.startswith("wol_woke: ") for line in history)
    assert _audit(stack, request["id"])["outcome"].startswith("woke ")
    assert [r["id"] for r in _get(stack, "/api/v1/wol")] == [request["id"]]


def test_preflight_warns_without_a_relay_and_the_server_still_sends_its_own(
        stack: Stack, listen: Listen) -> None:
    sock, port = listen()
    _settings(stack, addresses=[LOOPBACK], ports=[port], repeat=2)
    stack.create_agent("sleeper")

    before = _get(stack, "/api/v1/wol/preflight?targets=127.0.0.1/8&agents=sleeper")
    assert [(p["subnet"], p["relays_online"]) for p in before] == [
        (None, 0), ("127.0.0.0/8", 0)]  # agents first; sleeper never said where it is
    assert "address is not known" in before[0]["warning"]
    # sleeper's MAC is not known (refused); the address goes to the server's own.
    assert [p["packets"] for p in before] == [False, True]
    assert before[1]["warning"].startswith("no relay agent is online in 127.0.0.0/8: "
                                           "only the server's own packets go out")

    created = _post(stack, targets=[TARGET])

    [request] = created["requests"]
    assert request["relays"] == []
    assert request["warning"] == before[1]["warning"]
    [send] = request["sends"]
    assert (send["by"], send["to"], send["ports"]) == ("server", [LOOPBACK], [port])
    assert send["result"]["ok"] is True
    assert send["result"]["targets"][0]["packets"] == 2
    _assert_magic(_received(sock, 2), 2)

    stack.start_agent("relay1")
    stack.wait_agent("relay1", "online")
    after = _get(stack, "/api/v1/wol/preflight?targets=127.0.0.1/8")
    assert after == [{"agent_id": None, "mac": None, "address": LOOPBACK,
                      "subnet": "127.0.0.0/8", "relays_online": 1, "relays": ["relay1"],
                      "warning": None, "packets": True}]


def test_bad_targets_are_refused_with_the_reason_and_nothing_is_sent(stack: Stack) -> None:
    stack.create_agent("sleeper")
    refused = [
        ({"targets": [{"mac": "zz:bb:cc:dd:ee:42"}]}, 400, "target 1: 'zz:bb:cc:dd:ee:42' "
                                                           "is not a MAC address"),
        ({"targets": [{**TARGET, "address": "127.0.0.300"}]}, 400, "not an IPv4 address"),
        ({"targets": [{"mac": MAC, "address": LOOPBACK}]}, 400, "'address' and 'prefix'"),
        ({"targets": [{**TARGET, "prefix": 4}]}, 400, "prefix 4 is not from 8 to 32"),
        ({"targets": [TARGET], "addresses": ["relay.example"]}, 400,
         "addresses: 'relay.example' is not an IPv4 or IPv6 address"),
        ({"agents": ["sleeper"]}, 400, "agent sleeper has reported no IPv4 interface"),
        ({"agents": ["nobody"]}, 404, "unknown agents: nobody"),
        ({"targets": [{**TARGET, "port": 9}]}, 422, "targets.0.port"),
        ({}, 400, "give 'agents' and/or 'targets'"),
    ]
    for body, status, message in refused:
        error = _post(stack, status, **body)["error"]
        assert error["status"] == status
        assert message in error["message"], (body, error)
    for query in ("targets=127.0.0.1", "targets=127.0.0.1/x", "agents=bad%20name", ""):
        _get(stack, f"/api/v1/wol/preflight?{query}", status=422 if "agents" in query else 400)
    _get(stack, "/api/v1/wol/nope", status=404)

    assert _get(stack, "/api/v1/health")["status"] == "ok"
    assert stack.server.process.poll() is None
    assert _get(stack, "/api/v1/wol") == []
