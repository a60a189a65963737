"""The timed phases every hold shares (``hold``, ``one-port`` and the suite's
fleets): a fresh broker's idle baseline, then the hold of the connected agents,
and the figures both give."""

from __future__ import annotations

import time

from bench.procfs import Sample

# Let a fresh broker finish its start-up work before the baseline is taken.
SETTLE_S = 2.0
BASELINE_IDLE_S = 3.0
# Between the last SUBACK and the hold: the last connects' follow-up work.
AFTER_CONNECT_S = 1.0


def idle_baseline(broker_pid: int) -> tuple[Sample, Sample]:
    """The broker with no clients: settle, then two samples BASELINE_IDLE_S apart."""
    time.sleep(SETTLE_S)
    first = Sample.take(broker_pid)
    time.sleep(BASELINE_IDLE_S)
    return first, Sample.take(broker_pid)


def hold(broker_pid: int, helper_pids: list[int], seconds: float) -> tuple[Sample, Sample]:
    """The connected agents idle: two samples ``seconds`` apart, after AFTER_CONNECT_S."""
    time.sleep(AFTER_CONNECT_S)
    first = Sample.take(broker_pid, *helper_pids)
    time.sleep(seconds)
    return first, Sample.take(broker_pid, *helper_pids)


def cpu_pct(a: Sample, b: Sample) -> float:
    """The broker's CPU between two samples, in % of one core."""
    return round(100 * (b.cpu_s - a.cpu_s) / (b.at - a.at), 2)


def rss_per_connection(before: Sample, held: Sample, connections: int) -> float | None:
    """KiB of broker RSS per held connection, None if none connected."""
    return round((held.rss_kib - before.rss_kib) / connections, 2) if connections else None
