"""Live fuzzing over TLS (issue 15, item 8): an agent with a valid identity
connects, then sends valid SUBSCRIBE, PUBLISH, PUBACK, UNSUBSCRIBE and
PINGREQ packets with bytes flipped, cut, duplicated or spliced. Bounded in
count and time (about 20 s). The broker must stay up without an ERROR or a
traceback, and a well-behaved agent must still get its commands."""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from epns.mqtt import (
    Pingreq,
    Puback,
    Publish,
    Subscribe,
    Unsubscribe,
    encode,
)
from tests.support.clients import RawClient, agent_files, connect, connect_packet, connect_server
from tests.support.processes import BrokerProcess

SEED = 15
SESSIONS = 300
TIME_BOX = 20.0


def _valid_packets(agent_id: str, rng: random.Random) -> list[bytes]:
    own = f"epns/v1/agents/{agent_id}"
    return [
        encode(Subscribe(rng.randint(1, 65535), ((f"{own}/cmd", 1), ("epns/v1/all/cmd", 0)))),
        encode(Publish(f"{own}/evt", bytes(rng.randbytes(rng.randint(0, 64))), qos=1,
                       packet_id=rng.randint(1, 65535))),
        encode(Publish(f"{own}/presence", b'{"state":"online"}', qos=0, retain=True)),
        encode(Puback(rng.randint(1, 65535))),
        encode(Unsubscribe(rng.randint(1, 65535), ("epns/v1/all/cmd",))),
        encode(Pingreq()),
    ]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        if kind == 0 and out:  # flip a byte
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif kind == 1 and out:  # cut
            del out[rng.randrange(len(out)):]
        elif kind == 2 and out:  # duplicate a slice
            start = rng.randrange(len(out))
            out[start:start] = out[start:start + rng.randint(1, 8)]
        elif kind == 3:  # splice random bytes in
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        else:  # a length byte set high
            if len(out) > 1:
                out[1] = rng.choice((0x7F, 0xFF, 0x00))
    return bytes(out)


@pytest.mark.timeout(90)
def test_mutated_packets_from_a_valid_agent_never_hurt_the_broker(
        start_broker: Callable[..., BrokerProcess], pki_dir: Path,
        agent_ids: Callable[[int], list[str]]) -> None:
    broker = start_broker(limits__connect_rate="5000", limits__connect_burst="2000",
                          limits__source_connect_rate="5000",
                          limits__source_connect_burst="2000")
    fuzzer, bystander = agent_ids(2)
    good = connect(broker.port, pki_dir, bystander, cert=agent_files(pki_dir, bystander))
    assert good.subscribe(f"epns/v1/agents/{bystander}/cmd") == [1]
    rng = random.Random(SEED)
    answered = sessions = 0
    deadline = time.monotonic() + TIME_BOX
    while sessions < SESSIONS and time.monotonic() < deadline:
        sessions += 1
        raw = RawClient(broker.port, pki_dir, fuzzer)
        try:
            raw.send(connect_packet(fuzzer))
            raw.read_packet(timeout=3)
            packets = _valid_packets(fuzzer, rng)
            stream = b"".join(rng.choice(packets) if rng.random() < 0.6
                              else _mutate(rng.choice(packets), rng)
                              for _ in range(rng.randint(1, 12)))
            raw.send(stream)
            raw.sock.settimeout(0.2)
            answered += bool(raw.sock.recv(65536))
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            raw.close()
    assert broker.process.poll() is None
    assert sessions >= 50, f"only {sessions} fuzz sessions in {TIME_BOX} s"
    # The fuzz reached the packet handlers, not only the codec's refusals.
    assert answered > sessions // 4
    assert broker.metric("epns_broker_messages_in_total") > 0
    server = connect_server(broker.port, pki_dir)
    server.publish(f"epns/v1/agents/{bystander}/cmd", b"still here")
    assert good.expect().payload == b"still here"
    assert not [line for line in broker.lines if "Traceback" in line or " ERROR " in line]
    for client in (good, server):
        client.close()
