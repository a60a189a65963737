"""The benchmark's publisher: the management server's role on the MQTT link.

Connects over TLS with the server's client certificate from the benchmark PKI
(``server.crt``, CN ``epns-server``, the identity both brokers' ACLs let write
command topics), publishes wake-ups at QoS 1 and waits for every PUBACK. Each
payload carries its sequence number and its send time (``wake_payload``), so
the simulated agents measure the receive latency. Three modes:

- ``wake-all``: one publish to the fan-out topic ``epns/v1/all/cmd``;
- ``per-agent``: one publish to each agent's ``epns/v1/agents/<id>/cmd``,
  at most ``--window`` unacknowledged at any time;
- ``stream``: ``--total`` single wake-ups to random agents at ``--rate`` per
  second (the 1:1 steady stream).

Prints one JSON line, ``{"event": "published", ...}``, and exits. Loopback
only; the whole run is bounded by ``--timeout``.

    python -m bench.publisher --port 8883 wake-all
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.bench_pki import DEFAULT_DIR, agent_id
from bench.wake_payload import encode
from epns import pki
from epns.errors import MalformedPacket
from epns.mqtt import Connack, Connect, Decoder, Disconnect, Puback, Role, publish_bytes
from epns.mqtt import encode as encode_packet
from epns.topics import ALL_CMD

CLIENT_ID = pki.SERVER_CLIENT_NAME


class Publisher(asyncio.Protocol):
    """One MQTT connection that publishes at QoS 1 and counts PUBACKs."""

    def __init__(self, window: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.window = asyncio.Semaphore(window)
        self.unacked: set[int] = set()
        self.acked = 0
        self.last_ack_at = 0.0
        self.all_acked = asyncio.Event()
        self._next_id = 0
        self._decoder = Decoder(Role.CLIENT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Clean session off, no will, no username: the certificate is the identity.
        transport.write(encode_packet(  # type: ignore[attr-defined]
            Connect(CLIENT_ID, 60, clean_session=False)))

    def data_received(self, data: bytes) -> None:
        self._decoder.feed(data)
        try:
            while (packet := self._decoder.next_packet()) is not None:
                if isinstance(packet, Puback):
                    self._acked(packet.packet_id)
                elif isinstance(packet, Connack) and not self.connected.done():
                    if packet.return_code == 0:
                        self.connected.set_result(None)
                    else:
                        self.connected.set_exception(
                            RuntimeError(f"CONNACK return code {packet.return_code}"))
        except MalformedPacket as exc:
            if not self.connected.done():
                self.connected.set_exception(RuntimeError(f"malformed packet: {exc}"))
            assert self.transport is not None
            self.transport.abort()

    def _acked(self, packet_id: int) -> None:
        if packet_id in self.unacked:
            self.unacked.discard(packet_id)
            self.acked += 1
            self.last_ack_at = time.monotonic()
            self.window.release()
            if not self.unacked:
                self.all_acked.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before CONNACK: {exc}"))

    async def publish(self, topic: str, seq: int) -> float:
        """Send one QoS 1 wake-up once the window allows; returns its send time."""
        await self.window.acquire()
        self._next_id = self._next_id % 65535 + 1
        self.unacked.add(self._next_id)
        self.all_acked.clear()
        sent_at = time.monotonic()
        assert self.transport is not None
        self.transport.write(publish_bytes(topic, encode(seq, sent_at), 1, self._next_id))
        return sent_at


def topics_for(args: argparse.Namespace) -> list[str]:
    """The topic of each publish, in order."""
    if args.mode == "wake-all":
        return [ALL_CMD]
    if args.mode == "per-agent":
        return [f"epns/v1/agents/{agent_id(i)}/cmd"
                for i in range(args.first, args.first + args.count)]
    chooser = random.Random(args.seed)
    return [f"epns/v1/agents/{agent_id(chooser.randrange(args.first, args.first + args.count))}"
            "/cmd" for _ in range(args.total)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, publish, wait for the PUBACKs, disconnect."""
    context = ssl.create_default_context(cafile=str(args.pki_dir / pki.CA_CERT))
    context.load_cert_chain(args.pki_dir / pki.SERVER_CERT, args.pki_dir / pki.SERVER_KEY)
    loop = asyncio.get_running_loop()
    topics = topics_for(args)
    started = time.monotonic()
    async with asyncio.timeout(args.timeout):
        transport, client = await loop.create_connection(
            lambda: Publisher(args.window), args.host, args.port, ssl=context,
            server_hostname=args.server_name)
        try:
            await client.connected
            connected_at = time.monotonic()
            interval = 1 / args.rate if args.mode == "stream" else 0.0
            sent: list[float] = []
            for seq, topic in enumerate(topics):
                if interval:
                    # Steady pace: each send at its slot, however late the last was.
                    await asyncio.sleep(max(0.0, connected_at + seq * interval
                                            - time.monotonic()))
                sent.append(await client.publish(topic, seq))
            await client.all_acked.wait()
        finally:
            if not transport.is_closing():
                transport.write(encode_packet(Disconnect()))
                transport.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"mode": args.mode, "sent": len(sent), "acked": client.acked,
            "connect_s": round(connected_at - started, 3), "first_sent_at": sent[0],
            "last_sent_at": sent[-1], "last_ack_at": client.last_ack_at,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="broker address (loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-name", default="127.0.0.1")
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--window", type=int, default=32,
                        help="unacknowledged publishes at most (the brokers' max in-flight)")
    parser.add_argument("--timeout", type=float, default=120.0, help="cap on the whole run, s")
    parser.add_argument("mode", choices=("wake-all", "per-agent", "stream"))
    parser.add_argument("--first", type=int, default=1, help="first agent index")
    parser.add_argument("--count", type=int, default=1, help="agents addressed")
    parser.add_argument("--rate", type=float, default=20.0, help="stream: publishes per second")
    parser.add_argument("--total", type=int, default=100, help="stream: publishes in all")
    parser.add_argument("--seed", type=int, default=1, help="stream: choice of agents")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the publisher only dials the loopback interface")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: one JSON line on stdout."""
    args = parse_args(argv)
    try:
        report = uvloop.run(run(args))
    except (OSError, RuntimeError, TimeoutError, ssl.SSLError) as exc:
        print(json.dumps({"event": "error", "error": f"{type(exc).__name__}: {exc}"}),
              flush=True)
        return 1
    print(json.dumps({"event": "published", **report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
