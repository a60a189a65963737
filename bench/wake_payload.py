"""The benchmark's wake-up payload: a sequence number and the publisher's send time.

The publisher and the simulated agents run on the same Linux machine, so
``time.monotonic()`` (CLOCK_MONOTONIC) is one clock for both processes and the
receive latency is the difference of two readings.
"""

from __future__ import annotations

import json


def encode(seq: int, sent_at: float) -> bytes:
    """The payload of wake-up number ``seq`` sent at ``sent_at`` (monotonic s)."""
    return json.dumps({"bench": seq, "t": sent_at}, separators=(",", ":")).encode()


def decode(payload: bytes) -> tuple[int, float] | None:
    """(seq, sent_at) of a benchmark payload, or None for anything else."""
    try:
        data = json.loads(payload)
        return int(data["bench"]), float(data["t"])
    except (ValueError, KeyError, TypeError):
        return None
