"""MQTT clients for the tests: paho for well-behaved ones, raw TLS for the rest."""

from __future__ import annotations

import queue
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from epns import pki
from epns.mqtt import (
    Connect,
    Decoder,
    Packet,
    Role,
    Subscribe,
    Will,
    encode,
    puback_bytes,
    remaining_length,
)

_V5_TO_V311 = {0x84: 1, 0x85: 2, 0x88: 3, 0x86: 4, 0x87: 5}

# Every client a test opens, so that one failing halfway leaves none behind.
_opened: list[Client | RawClient] = []


def close_all() -> None:
    """Close whatever the last test left open (closing twice is harmless)."""
    while _opened:
        _opened.pop().close()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Client:
    """A paho client whose callbacks feed queues the test waits on."""

    def __init__(self, paho_client: mqtt.Client) -> None:
        self.paho = paho_client
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connacks: queue.Queue[int] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.disconnects: queue.Queue[int] = queue.Queue()
        paho_client.on_message = self._on_message
        paho_client.on_connect = self._on_connect
        paho_client.on_subscribe = self._on_subscribe
        paho_client.on_disconnect = self._on_disconnect
        _opened.append(self)

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_connect(self, client: object, userdata: object, flags: object, rc: object,
                    props: object = None) -> None:
        code = int(rc.value if hasattr(rc, "value") else rc)  # type: ignore[attr-defined]
        # paho 2 reports a 3.1.1 CONNACK as an MQTT 5 reason code; map it back.
        self.connacks.put(_V5_TO_V311.get(code, code))

    def _on_subscribe(self, client: object, userdata: object, mid: int, codes: list[object],
                      props: object = None) -> None:
        self.subacks.put([int(c.value if hasattr(c, "value") else c) for c in codes])  # type: ignore[attr-defined]

    def _on_disconnect(self, client: object, userdata: object, flags: object, rc: object,
                       props: object = None) -> None:
        self.disconnects.put(int(rc.value if hasattr(rc, "value") else rc))  # type: ignore[attr-defined]

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5) -> list[int]:
        self.paho.subscribe(topic, qos)
        return self.subacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=5)

    def expect(self, timeout: float = 5) -> Received:
        return self.messages.get(timeout=timeout)

    def expect_none(self, wait: float = 1.0) -> None:
        try:
            got = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {got}")

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()
        # paho 2.x closes the socket pair that wakes its loop thread only in
        # __del__; when the client dies inside a reference cycle, the garbage
        # collector may finalize those sockets first and pytest (warnings are
        # errors) fails the run with a ResourceWarning. Close them now.
        self.paho._reset_sockets()


def tls_context(pki_dir: Path, cert: Path | None = None, key: Path | None = None
                ) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki_dir / pki.CA_CERT))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def agent_files(pki_dir: Path, agent_id: str) -> tuple[Path, Path]:
    pair = pki.agent_pair(pki_dir, agent_id)
    return pair.cert, pair.key


def connect(port: int, pki_dir: Path, client_id: str, *, cert: tuple[Path, Path] | None = None,
            context: ssl.SSLContext | None = None, token: str | None = None,
            username: str | None = None, clean: bool = True, keepalive: int = 60,
            will: tuple[str, bytes] | None = None, expect_rc: int | None = 0) -> Client:
    """Connect a paho client over TLS; by default wait for a successful CONNACK."""
    paho_client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                              clean_session=clean)
    paho_client.tls_set_context(context or tls_context(pki_dir, *(cert or (None, None))))
    if token is not None:
        paho_client.username_pw_set(username if username is not None else client_id, token)
    if will is not None:
        paho_client.will_set(will[0], will[1], qos=1, retain=True)
    client = Client(paho_client)
    paho_client.connect("127.0.0.1", port, keepalive=keepalive)
    paho_client.loop_start()
    if expect_rc is not None:
        rc = client.connacks.get(timeout=10)
        if rc != expect_rc:
            client.close()
            raise AssertionError(f"CONNACK {rc}, expected {expect_rc}")
    return client


def connect_server(port: int, pki_dir: Path) -> Client:
    """Connect as the management server (its client certificate, role server)."""
    return connect(port, pki_dir, pki.SERVER_CLIENT_NAME,
                   cert=(pki_dir / pki.SERVER_CERT, pki_dir / pki.SERVER_KEY))


# -- raw MQTT, for misbehaving clients -------------------------------------
# Well-formed packets come from epns.mqtt, the codec under test elsewhere;
# the deliberately malformed ones stay hand-written in the tests themselves.

def encode_length(length: int) -> bytes:
    """The remaining-length field (section 2.2.3), to hand-build a frame."""
    return remaining_length(length)


def utf8(text: str) -> bytes:
    """A length-prefixed string, to hand-build a (malformed) packet."""
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, *, keepalive: int = 60, clean: bool = True,
                   will: tuple[str, bytes] | None = None) -> bytes:
    """CONNECT; the will, if any, is retained at QoS 1 as the agent's is."""
    last_will = None if will is None else Will(will[0], will[1], qos=1, retain=True)
    return encode(Connect(client_id, keepalive, clean_session=clean, will=last_will))


def subscribe_packet(packet_id: int, topic: str, qos: int = 1) -> bytes:
    """SUBSCRIBE to one filter."""
    return encode(Subscribe(packet_id, ((topic, qos),)))


def puback_packet(packet_id: int) -> bytes:
    """PUBACK."""
    return puback_bytes(packet_id)


class RawClient:
    """A TLS socket speaking hand-made MQTT, to misbehave on purpose.

    What the broker answers is read by the strict client-side decoder, so a
    malformed answer fails the test with MalformedPacket."""

    def __init__(self, port: int, pki_dir: Path, agent_id: str | None) -> None:
        files = agent_files(pki_dir, agent_id) if agent_id else (None, None)
        context = tls_context(pki_dir, *files)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.decoder = Decoder(Role.CLIENT)
        _opened.append(self)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 5) -> Packet:
        """The next packet; raises on EOF or timeout."""
        self.sock.settimeout(timeout)
        while (packet := self.decoder.next_packet()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the broker")
            self.decoder.feed(chunk)
        return packet

    def read_packet(self, timeout: float = 5) -> tuple[int, int, bytes]:
        """(type, flags, body) of the next packet, for tests that read its bytes.

        The decoded packet encoded again: the decoder makes its fields fill the
        packet exactly, so the body is the one the broker sent."""
        frame = encode(self.read(timeout))
        start = 2
        while frame[start - 1] & 0x80:  # the remaining length's continuation bit
            start += 1
        return frame[0] >> 4, frame[0] & 0x0F, frame[start:]

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the broker closed the connection, or None."""
        start = time.monotonic()
        self.sock.settimeout(0.2)
        while time.monotonic() - start < seconds:
            try:
                if not self.sock.recv(65536):
                    return time.monotonic() - start
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError, OSError):
                return time.monotonic() - start
        return None

    def close(self) -> None:
        self.sock.close()


def tls_refused(port: int, context: ssl.SSLContext, client_id: str = "a01") -> str:
    """Connect and send CONNECT; return how the broker refused at the TLS layer.

    With TLS 1.3 the client finishes its handshake before the server checks the
    client certificate, so the refusal arrives as an alert on the first read.
    Raises AssertionError if a CONNACK comes back instead.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False
                             ) as sock:
        try:
            sock.do_handshake()
            sock.sendall(connect_packet(client_id))
            data = sock.recv(4)
        except (ssl.SSLError, ConnectionError) as exc:
            return type(exc).__name__ + ": " + str(exc)
    if data:
        raise AssertionError(f"the broker answered {data!r} instead of refusing the handshake")
    return "closed"
