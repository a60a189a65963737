"""broker.admission: the token bucket and the connection gate, on an explicit clock."""

from __future__ import annotations

import pytest

from broker.admission import AdmissionGate, Refusal, TokenBucket

T0 = 1000.0


def test_bucket_starts_full_and_empties() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=T0)
    assert [bucket.take(T0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=T0)
    assert bucket.take(T0)
    assert bucket.take(T0)
    assert not bucket.take(T0)
    assert not bucket.take(T0 + 0.05)  # half a token
    assert bucket.take(T0 + 0.1)  # the other half arrived
    assert not bucket.take(T0 + 0.1)
    assert bucket.take(T0 + 0.2)


def test_bucket_holds_at_most_burst() -> None:
    bucket = TokenBucket(rate=100.0, burst=3, now=T0)
    for _ in range(3):
        assert bucket.take(T0)
    later = T0 + 3600  # an hour of refill is capped at the burst
    assert [bucket.take(later) for _ in range(4)] == [True, True, True, False]


def test_bucket_with_a_fractional_rate() -> None:
    bucket = TokenBucket(rate=0.5, burst=1, now=T0)
    assert bucket.take(T0)
    assert not bucket.take(T0 + 1.9)
    assert bucket.take(T0 + 2.0)


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=T0)
    assert bucket.take(T0)
    assert not bucket.take(T0 - 10)  # no negative refill, no crash
    assert bucket.take(T0 - 9)


def test_gate_admits_and_counts() -> None:
    gate = AdmissionGate(max_connections=10, rate=100.0, burst=10, now=T0)
    assert gate.open == 0
    assert [gate.admit(T0) for _ in range(3)] == [None, None, None]
    assert gate.open == 3


def test_gate_connection_limit() -> None:
    gate = AdmissionGate(max_connections=2, rate=100.0, burst=100, now=T0)
    assert gate.admit(T0) is None
    assert gate.admit(T0) is None
    assert gate.admit(T0) is Refusal.CONNECTION_LIMIT
    assert gate.open == 2
    gate.release()
    assert gate.open == 1
    assert gate.admit(T0) is None
    assert gate.admit(T0) is Refusal.CONNECTION_LIMIT


def test_gate_rate() -> None:
    gate = AdmissionGate(max_connections=100, rate=2.0, burst=2, now=T0)
    assert gate.admit(T0) is None
    assert gate.admit(T0) is None
    assert gate.admit(T0) is Refusal.ADMISSION_RATE
    assert gate.open == 2  # a refused connection is not counted
    assert gate.admit(T0 + 0.5) is None
    assert gate.admit(T0 + 0.5) is Refusal.ADMISSION_RATE
    assert gate.open == 3


def test_gate_limit_refusal_does_not_spend_a_token() -> None:
    gate = AdmissionGate(max_connections=1, rate=1.0, burst=2, now=T0)
    assert gate.admit(T0) is None
    for _ in range(5):
        assert gate.admit(T0) is Refusal.CONNECTION_LIMIT
    gate.release()
    # one token is left from the burst of 2, despite the refusals
    assert gate.admit(T0) is None


def test_release_does_not_refund_the_rate() -> None:
    gate = AdmissionGate(max_connections=10, rate=1.0, burst=1, now=T0)
    assert gate.admit(T0) is None
    gate.release()
    assert gate.open == 0
    assert gate.admit(T0) is Refusal.ADMISSION_RATE


@pytest.mark.parametrize("refusal", list(Refusal))
def test_refusal_values_are_metric_labels(refusal: Refusal) -> None:
    assert refusal.value == refusal.value.lower()
    assert " " not in refusal.value
    assert str(refusal) in {"connection_limit", "admission_rate"}
