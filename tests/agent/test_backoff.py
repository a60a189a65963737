"""agent_push.backoff: full jitter under an exponential bound, and reset."""

from __future__ import annotations

from agent_push.backoff import Backoff


def test_delays_stay_under_the_exponential_bound_and_the_cap():
    backoff = Backoff(base=1.0, cap=8.0)
    for attempt in range(1, 12):
        delay = backoff.next_delay()
        assert 0.0 <= delay <= min(8.0, 2 ** (attempt - 1))


def test_full_jitter_spreads_a_fleet_over_the_whole_window():
    """A thousand agents that lost the broker at once do not come back at once."""
    first_retries = []
    for _ in range(1000):
        backoff = Backoff(base=1.0, cap=120.0)
        for _ in range(4):
            delay = backoff.next_delay()
        first_retries.append(delay)
    buckets = [sum(1 for d in first_retries if k <= d < k + 2) for k in range(0, 8, 2)]
    assert all(150 <= count <= 350 for count in buckets), buckets


def test_reset_returns_to_the_base_window():
    backoff = Backoff(base=1.0, cap=120.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 1.0
