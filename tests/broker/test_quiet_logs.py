"""Quiet logs under attack (issue 15, item 5): a flood of failed TLS
handshakes costs the broker's log a line per cause and interval, each with
the count of the lines held back, not a line per connection."""

from __future__ import annotations

import re
import socket
import time

BAD = 300


def bad_handshake(port: int) -> None:
    """Plain HTTP where TLS is expected: the handshake fails at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n")
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass  # reset by the broker: the handshake failed, as it should


def test_a_flood_of_bad_handshakes_is_a_few_lines_with_the_count(start_broker):
    broker = start_broker(limits__refusal_log_interval="1")
    for _ in range(BAD):
        bad_handshake(broker.port)
    # The first line at once; the rest counted, and written once the interval is over.
    broker.log_contains(r"tls_failed .*suppressed=\d+", timeout=5)
    time.sleep(1.5)
    lines = [line for line in broker.lines if " tls_failed " in line]
    assert 2 <= len(lines) <= 10, lines
    # A line with a peer is one failure; suppressed=N counts the others held back.
    logged = sum(("peer=" in line) + int(re.search(r"suppressed=(\d+)|$", line).group(1) or 0)
                 for line in lines)
    assert logged == BAD == broker.metric('epns_broker_refusals_total{reason="tls_handshake"}')
    assert all("reason=HTTP_REQUEST" in line for line in lines), lines
