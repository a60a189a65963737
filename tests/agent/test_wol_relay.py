"""agent_push.wol.relay: real magic packets to UDP listeners on 127.0.0.1.

SAFETY: every address here is 127.0.0.1, on ephemeral ports the test listens on
(standing in for ports 7 and 9). Every packet goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import wakeonlan

from agent_push.wol import relay
from epns.agent_config import WolSettings
from epns.wol import magic_packet, parse_wol_body

LOOPBACK = "127.0.0.1"
MAC_1 = "aa:bb:cc:dd:ee:01"
MAC_2 = "aa:bb:cc:dd:ee:02"


@pytest.fixture
def listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two UDP sockets on 127.0.0.1, on ports the kernel picks."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sock in socks:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.2)
    yield socks[0], socks[1]
    for sock in socks:
        sock.close()


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def _received(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on ``sock``: loopback delivers before send returns."""
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(4096))
        except TimeoutError:
            return datagrams


def _assert_magic(datagram: bytes, mac: str) -> None:
    mac_bytes = bytes(int(octet, 16) for octet in mac.split(":"))
    assert len(datagram) == 102
    assert datagram[:6] == b"\xff\xff\xff\xff\xff\xff"
    for copy in range(16):
        assert datagram[6 + 6 * copy : 12 + 6 * copy] == mac_bytes
    assert datagram == magic_packet(mac)


def _relay(body: dict[str, Any], settings: WolSettings) -> dict[str, Any]:
    return asyncio.run(relay(parse_wol_body(body, settings), settings))


def test_each_port_gets_repeat_magic_packets_and_the_result_says_so(
    listeners: tuple[socket.socket, socket.socket],
) -> None:
    ports = [_port(sock) for sock in listeners]
    body = {"targets": [{"mac": "AA-BB-CC-DD-EE-01", "addresses": [LOOPBACK]}],
            "ports": ports, "repeat": 3}
    result = _relay(body, WolSettings(spacing=0.01))
    for sock in listeners:
        datagrams = _received(sock)
        assert len(datagrams) == 3
        for datagram in datagrams:
            _assert_magic(datagram, MAC_1)
    assert result == {
        "ok": True,
        "targets": [{"mac": MAC_1, "packets": 6, "errors": [],
                     "sent": [f"{LOOPBACK}:{ports[0]}", f"{LOOPBACK}:{ports[1]}"]}],
    }


def test_ports_and_repeat_come_from_the_settings_when_the_body_omits_them(
    listeners: tuple[socket.socket, socket.socket],
) -> None:
    settings = WolSettings(ports=tuple(_port(sock) for sock in listeners), repeat=2,
                           spacing=0.01)
    result = _relay({"targets": [{"mac": MAC_1, "addresses": [LOOPBACK]}]}, settings)
    assert [len(_received(sock)) for sock in listeners] == [2, 2]
    assert result["targets"][0]["packets"] == 4


def test_rounds_are_spaced(listeners: tuple[socket.socket, socket.socket]) -> None:
    body = {"targets": [{"mac": MAC_1, "addresses": [LOOPBACK]}],
            "ports": [_port(listeners[0])], "repeat": 3}
    started = time.monotonic()
    _relay(body, WolSettings(spacing=0.1))
    assert time.monotonic() - started >= 0.2


def test_a_bad_mac_and_a_bad_address_do_not_stop_a_valid_target(
    listeners: tuple[socket.socket, socket.socket],
) -> None:
    ports = [_port(sock) for sock in listeners]
    body = {"targets": [{"mac": "not-a-mac", "addresses": [LOOPBACK]},
                        {"mac": MAC_2, "addresses": ["127.0.0.300", LOOPBACK]}],
            "ports": ports, "repeat": 2}
    result = _relay(body, WolSettings(spacing=0.01))
    for sock in listeners:
        datagrams = _received(sock)
        assert len(datagrams) == 2
        for datagram in datagrams:
            _assert_magic(datagram, MAC_2)
    bad_mac, valid = result["targets"]
    assert result["ok"] is False
    assert bad_mac["mac"] == "not-a-mac"
    assert (bad_mac["packets"], bad_mac["sent"]) == (0, [])
    assert "'not-a-mac' is not a MAC address" in bad_mac["errors"][0]
    assert valid["packets"] == 4
    assert valid["sent"] == [f"{LOOPBACK}:{port}" for port in ports]
    assert valid["errors"] == ["'127.0.0.300' is not an IPv4 or IPv6 address"]


def test_a_send_that_fails_is_reported_once_and_the_others_still_go(
    listeners: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch,
) -> None:
    working, failing = (_port(sock) for sock in listeners)
    real_wake = wakeonlan.wake

    def wake(*macs: str, host: str, port: int) -> None:
        # The kernel's answer for a route that does not exist, on one port only.
        if port == failing:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        real_wake(*macs, host=host, port=port)

    monkeypatch.setattr(wakeonlan, "wake", wake)
    body = {"targets": [{"mac": MAC_1, "addresses": [LOOPBACK]}],
            "ports": [working, failing], "repeat": 3}
    result = _relay(body, WolSettings(spacing=0.01))
    assert [len(_received(sock)) for sock in listeners] == [3, 0]
    assert result == {
        "ok": False,
        "targets": [{"mac": MAC_1, "packets": 3, "sent": [f"{LOOPBACK}:{working}"],
                     "errors": [f"{LOOPBACK}:{failing}: Network is unreachable"]}],
    }
