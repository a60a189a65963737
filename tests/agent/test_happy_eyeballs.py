"""Happy Eyeballs: both families raced, real sockets on ::1 and 127.0.0.1.

A name that resolves to both is made with a hosts-file entry only inside the
netns matrix; here ``getaddrinfo`` is replaced by the two loopback addresses
(the function under test does the connecting, for real)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from agent_push import happy_eyeballs
from epns.eyeballs import interleave

V6, V4 = socket.AF_INET6, socket.AF_INET


def _info(family: socket.AddressFamily, host: str, port: int) -> tuple:  # type: ignore[type-arg]
    address = (host, port, 0, 0) if family == V6 else (host, port)
    return (family, socket.SOCK_STREAM, 6, "", address)


def test_interleave_alternates_families_and_keeps_the_first_family_first() -> None:
    infos = [_info(V6, "2001:db8::1", 1), _info(V6, "2001:db8::2", 1),
             _info(V4, "198.18.0.1", 1), _info(V4, "198.18.0.2", 1), _info(V4, "198.18.0.3", 1)]
    hosts = [info[4][0] for info in interleave(infos)]
    assert hosts == ["2001:db8::1", "198.18.0.1", "2001:db8::2", "198.18.0.2", "198.18.0.3"]
    assert interleave([]) == []


@pytest.fixture
def listener_v4() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@pytest.fixture
def silent_v6() -> Iterator[int]:
    """A port on ::1 that drops SYNs: a listener whose accept queue is full
    (Linux drops a SYN it has no room for), as a black-holed path does."""
    with socket.socket(V6) as server:
        server.bind(("::1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket(V6)
            filler.setblocking(False)
            filler.connect_ex(("::1", port))
            fillers.append(filler)
        time.sleep(0.1)
        yield port
        for filler in fillers:
            filler.close()


def _resolve_to(monkeypatch: pytest.MonkeyPatch, *infos: tuple) -> None:  # type: ignore[type-arg]
    monkeypatch.setattr(happy_eyeballs.socket, "getaddrinfo", lambda *_a, **_k: list(infos))


def test_a_black_holed_ipv6_address_costs_a_quarter_second_not_the_timeout(
        monkeypatch: pytest.MonkeyPatch, listener_v4: socket.socket, silent_v6: int) -> None:
    """The IPv6 address goes first and never answers; IPv4 wins after the stagger."""
    port = listener_v4.getsockname()[1]
    _resolve_to(monkeypatch, _info(V6, "::1", silent_v6), _info(V4, "127.0.0.1", port))
    began = time.monotonic()
    with happy_eyeballs.connect("push.example", port, timeout=10) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert sock.getblocking()
    assert 0.2 < time.monotonic() - began < 1


def test_a_refused_address_starts_the_next_at_once(
        monkeypatch: pytest.MonkeyPatch, listener_v4: socket.socket) -> None:
    port = listener_v4.getsockname()[1]
    with socket.socket(V6) as closed:  # a port nothing listens on
        closed.bind(("::1", 0))
        dead = closed.getsockname()[1]
    _resolve_to(monkeypatch, _info(V6, "::1", dead), _info(V4, "127.0.0.1", port))
    began = time.monotonic()
    with happy_eyeballs.connect("push.example", port, timeout=10) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)
    assert time.monotonic() - began < ATTEMPT_BOUND


ATTEMPT_BOUND = 0.2  # well under the 250 ms stagger: a refusal does not wait for it


def test_every_address_refused_is_a_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(V4) as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    _resolve_to(monkeypatch, _info(V4, "127.0.0.1", dead))
    with pytest.raises(ConnectionRefusedError):
        happy_eyeballs.connect("push.example", dead, timeout=5)


def test_nothing_answering_is_a_timeout_within_the_bound(
        monkeypatch: pytest.MonkeyPatch, silent_v6: int) -> None:
    _resolve_to(monkeypatch, _info(V6, "::1", silent_v6))
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        happy_eyeballs.connect("push.example", silent_v6, timeout=1)
    assert 0.9 < time.monotonic() - began < 2
