"""A raw MQTT 3.1.1 client over TLS for the conformance suite.

Well-formed packets are ``epns.mqtt`` packets, encoded by its encoder; the
broker's answers are decoded by its strict ``Decoder`` (as a client), so a
broker that sends a packet the standard forbids fails the test that got it.
Malformed packets are bytes the test writes by hand.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from epns import pki
from epns.mqtt import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Puback,
    Publish,
    Role,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    remaining_length,
)
from tests.support.clients import _opened, tls_context
from tests.support.processes import BrokerProcess

# Names the conformance rule admits (identities "conformance-*", topics "conformance/#").
NAME_PREFIX = "conformance-"
TOPIC_ROOT = "conformance"
_names = itertools.count(1)
P = TypeVar("P")


class Closed(Exception):
    """The broker closed the connection."""


@dataclass
class Target:
    """A broker under test, and the PKI its clients' certificates come from."""

    broker: BrokerProcess
    pki_dir: Path

    @property
    def kind(self) -> str:
        return self.broker.kind

    def fresh_name(self, prefix: str = NAME_PREFIX) -> str:
        """A client name (certificate CN and client id) never used before here."""
        return f"{prefix}{next(_names)}"

    def certificate(self, name: str) -> pki.Pair:
        """A fleet-CA client certificate with CN ``name``, made on first use."""
        pair = pki.agent_pair(self.pki_dir, name)
        if not pair.cert.exists():
            ca = pki.Pair(self.pki_dir / pki.CA_CERT, self.pki_dir / pki.CA_KEY)
            pki.create_client_cert(ca, pair, name)
        return pair

    def open(self, name: str) -> Conn:
        """A TLS connection with ``name``'s certificate; nothing sent yet."""
        pair = self.certificate(name)
        return Conn(self.broker.port, tls_context(self.pki_dir, pair.cert, pair.key))

    def connect(self, name: str | None = None, *, clean: bool = True, keep_alive: int = 60,
                will: Will | None = None) -> tuple[Conn, Connack]:
        """Open, CONNECT as ``name`` (a fresh one by default) and read the CONNACK."""
        name = name or self.fresh_name()
        conn = self.open(name)
        conn.send(Connect(name, keep_alive=keep_alive, clean_session=clean, will=will))
        return conn, conn.expect(Connack)

    def client(self, name: str | None = None, **kwargs: object) -> Conn:
        """A connected client (CONNACK 0 checked)."""
        conn, connack = self.connect(name, **kwargs)  # type: ignore[arg-type]
        assert connack.return_code == 0, connack
        return conn

    def topic(self, *levels: str) -> str:
        """A topic of the conformance namespace no other test uses."""
        return "/".join((TOPIC_ROOT, f"t{next(_names)}", *levels))


class Conn:
    """One TLS connection, speaking packets."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.decoder = Decoder(Role.CLIENT)
        self.pending: list[Packet] = []
        self.ids = itertools.count(1)
        _opened.append(self)  # closed after each test, whatever happens

    def send(self, data: bytes | Packet) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else encode(data))

    def recv(self, timeout: float = 5.0) -> Packet:
        """The next packet; Closed on EOF or reset, TimeoutError if none comes."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65_536)
            except (ConnectionError, ssl.SSLError) as exc:
                raise Closed(str(exc)) from None
            if not chunk:
                raise Closed("end of stream")
            self.pending += self.decoder.packets(chunk)
        return self.pending.pop(0)

    def expect(self, kind: type[P], timeout: float = 5.0) -> P:
        """The next packet, which must be a ``kind``."""
        packet = self.recv(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def expect_none(self, wait: float = 0.5) -> None:
        """No packet arrives within ``wait`` seconds (and the connection stays)."""
        try:
            packet = self.recv(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {packet!r}")

    def closed_within(self, seconds: float = 2.0) -> bool:
        """True when the broker closes the connection within ``seconds``;
        whatever it sent before stays in ``self.pending``."""
        deadline = time.monotonic() + seconds
        got: list[Packet] = []
        try:
            while True:
                got.append(self.recv(max(0.01, deadline - time.monotonic())))
        except Closed:
            return True
        except TimeoutError:
            return False
        finally:
            self.pending = got

    def subscribe(self, *topics: tuple[str, int]) -> Suback:
        packet_id = next(self.ids)
        self.send(Subscribe(packet_id, topics))
        suback = self.expect(Suback)
        assert suback.packet_id == packet_id
        return suback

    def unsubscribe(self, *topics: str) -> Unsuback:
        packet_id = next(self.ids)
        self.send(Unsubscribe(packet_id, topics))
        unsuback = self.expect(Unsuback)
        assert unsuback.packet_id == packet_id
        return unsuback

    def publish(self, topic: str, payload: bytes, qos: int = 0, *, retain: bool = False) -> None:
        """Publish; at QoS 1 wait for the PUBACK."""
        packet_id = next(self.ids) if qos else None
        self.send(Publish(topic, payload, qos, retain, packet_id=packet_id))
        if qos == 1:
            assert self.expect(Puback).packet_id == packet_id

    def message(self, timeout: float = 5.0, *, ack: bool = True) -> Publish:
        """The next PUBLISH, acknowledged at QoS 1 unless ``ack`` is False."""
        publish = self.expect(Publish, timeout)
        if ack and publish.qos == 1 and publish.packet_id is not None:
            self.send(Puback(publish.packet_id))
        return publish

    def disconnect(self) -> None:
        self.send(Disconnect())
        self.close()

    def close(self) -> None:
        self.sock.close()


# -- hand-made bytes, for what the encoder will not write -------------------------------

def frame(first: int, body: bytes, *, declared: int | None = None) -> bytes:
    """A packet with fixed header ``first``; ``declared`` overrides its remaining length."""
    return bytes((first,)) + remaining_length(len(body) if declared is None else declared) + body


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def connect_body(client_id: str, *, flags: int = 0x02, name: bytes = b"MQTT", level: int = 4,
                 keep_alive: int = 60, tail: bytes = b"") -> bytes:
    """A CONNECT body with exactly these flags; ``tail`` follows the client id."""
    return (string(name) + bytes((level, flags)) + keep_alive.to_bytes(2, "big")
            + string(client_id) + tail)
