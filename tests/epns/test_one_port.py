"""Telling the one port's connections apart (``epns.one_port``), pure."""

from __future__ import annotations

import pytest

from epns.front import Handover
from epns.one_port import MAX_HEAD, Kind, classify, websocket_head

CONNECT = bytes([0x10, 0x0C]) + b"\x00\x04MQTT"
UPGRADE = (b"GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")


@pytest.mark.parametrize(("alpn", "start", "kind"), [
    ("mqtt", b"", Kind.MQTT),
    ("mqtt", b"GET / HTTP/1.1\r\n", Kind.MQTT),  # ALPN is what the client said it speaks
    (None, CONNECT, Kind.MQTT),
    (None, b"", None),
    ("http/1.1", b"", None),  # the path decides: wait for the request line
    ("http/1.1", b"GET /api/v1/health HTTP/1.1\r\n", Kind.HTTP),
    (None, b"POST /api/v1/agents/a/sync HTTP/1.1\r\n", Kind.HTTP),
    (None, b"G", None),
    (None, b"GET /mq", None),
    (None, b"GET /mqttx HTTP/1.1\r\n", Kind.HTTP),
    (None, b"GET /mqtt HTTP/1.1\r\nHost: b\r\n", None),  # the head is not whole yet
    (None, UPGRADE, Kind.WEBSOCKET),
    ("http/1.1", b"GET /mqtt?x=1 HTTP/1.1\r\n\r\n", Kind.WEBSOCKET),
    (None, b"\x16\x03\x01", Kind.HTTP),  # TLS inside TLS: the server refuses it
])
def test_classify(alpn: str | None, start: bytes, kind: Kind | None) -> None:
    assert classify(alpn, start, "/mqtt") == kind


def test_without_a_websocket_path_everything_not_mqtt_is_http() -> None:
    assert classify("http/1.1", b"", None) is Kind.HTTP
    assert classify(None, UPGRADE, None) is Kind.HTTP


def test_a_head_that_never_ends_is_http_not_a_buffer_that_grows() -> None:
    start = b"GET /mqtt HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD
    assert classify(None, start, "/mqtt") is Kind.HTTP


def test_the_websocket_head_carries_the_fronts_facts_and_only_them() -> None:
    forged = UPGRADE.replace(b"\r\n\r\n", b"\r\nX-Client-Cert: forged\r\nx-real-ip: 1.2.3.4"
                             b"\r\n\r\n")
    head, rest = websocket_head(forged + b"\x82\x00", Handover("198.18.1.2", 5, b"\x30\x03"))
    assert rest == b"\x82\x00"
    assert b"forged" not in head
    assert b"1.2.3.4" not in head
    assert b"\r\nX-Real-IP: 198.18.1.2\r\n" in head
    assert b"\r\nX-Client-Cert: -----BEGIN%20CERTIFICATE-----" in head
    assert head.startswith(b"GET /mqtt HTTP/1.1\r\n")
    assert head.endswith(b"\r\n\r\n")


def test_no_certificate_no_header() -> None:
    head, _ = websocket_head(UPGRADE, Handover("::1", 5))
    assert b"X-Client-Cert" not in head
    assert b"X-Real-IP: ::1" in head
