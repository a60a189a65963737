"""The broker core in memory, for tests: the real codec, hub, core and
certificates, with a transport that records what would go on the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.access import Access
from broker.connection import MQTTConnection
from broker.fleet_broker import FleetBroker
from broker.hub import ConnectionHub
from broker.metrics import Metrics
from broker.revocation import RevocationFile
from epns.acl_rules import AccessPolicy
from epns.broker_config import LimitSettings
from epns.mqtt import Decoder, Packet, Role, encode
from epns.pki import SERVER_CERT, agent_pair, create_client_cert, init_dev_pki


class RecordingTransport:
    """Records writes; closes when asked."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def make_certificates(root: Path) -> dict[str, bytes]:
    """DER certificates of a dev PKI in ``root``: two agents and the server."""
    ca = init_dev_pki(root, ("localhost",))
    found = {}
    for name in ("agent-1", "agent-2"):
        pair = agent_pair(root, name)
        create_client_cert(ca, pair, name)
        found[name] = _der(pair.cert)
    found["epns-server"] = _der(root / SERVER_CERT)
    return found


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


class CoreFleet:
    """A hub and core, and clients that speak through the real codec."""

    def __init__(self, certificates: dict[str, bytes]) -> None:
        limits = LimitSettings()
        metrics = Metrics()
        access = Access(RevocationFile(None), None, AccessPolicy())
        self.broker = FleetBroker(limits, metrics, access)
        self.hub = ConnectionHub(self.broker, limits, metrics, access.revocations, 60.0)
        self.certificates = certificates

    def client(self, name: str) -> tuple[MQTTConnection, RecordingTransport, Decoder]:
        conn = MQTTConnection(self.hub, "primary", ("127.0.0.1", 1),
                              certificate=self.certificates[name])
        transport = RecordingTransport()
        self.hub._connections.add(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport, Decoder(Role.CLIENT)

    @staticmethod
    def exchange(conn: MQTTConnection, transport: RecordingTransport, decoder: Decoder,
                 *packets: Packet) -> list[Packet]:
        conn.data_received(b"".join(encode(packet) for packet in packets))
        answer = decoder.packets(bytes(transport.out))
        transport.out.clear()
        return answer
