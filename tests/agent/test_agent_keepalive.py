"""The real agent's keep-alive: paho's loop_misc runs a few times per keep-alive
(not every second), which must still send PINGREQ before the broker gives up
(1.5 x keep-alive) and notice a PINGRESP that never comes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

KEEPALIVE = 5


class FreezableRelay:
    """A TCP relay on 127.0.0.1 to ``port``. ``freeze`` makes the connections
    open so far half-open: nothing is forwarded any more, either way, and a
    close on one side is not passed on; it records when the agent next sends
    (its PINGREQ). Connections made afterwards are relayed normally."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._frozen: set[int] = set()
        self._sockets: list[socket.socket] = []
        self._connections = 0
        self.sent_after_freeze: float | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> float:
        self._frozen = set(range(self._connections))
        return time.monotonic()

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                agent, _ = self._listener.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [agent, broker]
            number, self._connections = self._connections, self._connections + 1
            threading.Thread(target=self._pump, args=(agent, broker, number, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, agent, number, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, number: int,
              from_agent: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            frozen = number in self._frozen
            if not data:
                if not frozen:
                    sink.close()
                return
            if frozen:
                if from_agent and self.sent_after_freeze is None:
                    self.sent_after_freeze = time.monotonic()
                continue
            try:
                sink.sendall(data)
            except OSError:
                return


@pytest.fixture
def relay(epns_broker) -> Iterator[FreezableRelay]:
    running = FreezableRelay(epns_broker.port)
    yield running
    running.close()


def test_pings_keep_an_idle_agent_connected(epns_broker, run_agent, agent_ids):
    """The broker drops a client silent for 1.5 x keep-alive: the agent's
    PINGREQs must come in time, four keep-alives in a row."""
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [epns_broker.port], keepalive={"primary": KEEPALIVE})
    agent.log_contains(rf"connected route=direct:{epns_broker.port} keepalive={KEEPALIVE}")
    syncs.wait_for("connect")
    time.sleep(4 * KEEPALIVE + 1)
    assert agent.count("disconnected") == 0, "\n".join(agent.lines)
    assert not [line for line in epns_broker.lines
                if "keepalive_expired" in line and f"client={agent_id}" in line]
    code, report = agent.status()
    assert code == 0, report


def test_a_broker_gone_silent_is_noticed_and_left(relay, epns_broker, run_agent, agent_ids):
    """Half-open: the agent's PINGREQ goes out within 1.25 x keep-alive of the
    freeze, the missing PINGRESP is noticed one keep-alive later, and the
    agent reconnects."""
    agent_id, = agent_ids(1)
    agent, syncs = run_agent(agent_id, [relay.port], keepalive={"primary": KEEPALIVE})
    agent.log_contains(rf"connected route=direct:{relay.port} keepalive={KEEPALIVE}")
    syncs.wait_for("connect")
    time.sleep(1.0)  # the on-connect sync's report has gone through
    seen = len(agent.lines)
    frozen_at = relay.freeze()
    agent.log_contains(r"disconnected route=", timeout=3 * KEEPALIVE, after=seen)
    noticed_at = time.monotonic()
    pinged_at = relay.sent_after_freeze
    assert pinged_at is not None, "the agent sent nothing after the freeze"
    assert pinged_at - frozen_at <= 1.25 * KEEPALIVE + 1.0
    assert noticed_at - pinged_at <= 1.5 * KEEPALIVE
    agent.log_contains(rf"connected route=direct:{relay.port}", timeout=15, after=seen)
