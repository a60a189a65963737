"""broker.admission: the token bucket and the connection gate, on an explicit clock."""

from __future__ import annotations

import pytest

from broker.admission import AdmissionGate, FairShare, Refusal, TokenBucket
from broker.sources import Source, source_of

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
    assert str(refusal) in {"connection_limit", "admission_rate", "source_rate", "subnet_rate",
                            "source_handshakes"}


# -- fairness between sources ------------------------------------------------

FAIR = FairShare(address_rate=1.0, address_burst=5, subnet_rate=2.0, subnet_burst=10,
                 reserve=0.5, handshakes=1_000)


def src(host: str) -> Source:
    source = source_of(host)
    assert source is not None
    return source


def test_a_lone_source_gets_the_whole_rate() -> None:
    """One office behind one NAT after a broker restart: nobody else asks,
    so its share does not hold it back; it gets what the global bucket has
    above the reserve, then the global rate."""
    gate = AdmissionGate(max_connections=10_000, rate=100.0, burst=100, now=T0, fair=FAIR)
    office = src("203.0.113.9")
    first = [gate.admit(T0, office) for _ in range(100)]
    # Down to the reserve (50) at once; its share was charged meanwhile.
    assert first.count(None) == 50
    assert set(first) == {None, Refusal.SOURCE_RATE}
    admitted = 0
    for tick in range(1, 1001):  # ten seconds, asking 5 times a tick
        admitted += [gate.admit(T0 + tick / 100, office) for _ in range(5)].count(None)
    assert admitted >= 0.95 * 1_000  # the global rate, 100/s, nearly all of it


def test_a_flood_cannot_take_the_reserve_from_the_others() -> None:
    gate = AdmissionGate(max_connections=10_000, rate=100.0, burst=100, now=T0, fair=FAIR)
    flooder = src("198.51.100.66")
    refused = [gate.admit(T0, flooder) for _ in range(1_000)]
    assert refused.count(None) == 50
    assert refused[-1] is Refusal.SOURCE_RATE
    # Forty agents, each from an address and a subnet of its own, still get in.
    agents = [src(f"192.0.{n}.1") for n in range(40)]
    assert [gate.admit(T0, agent) for agent in agents] == [None] * 40
    # The flood goes on; every agent still gets in, now and then.
    outcomes = []
    for tick in range(1, 101):
        now = T0 + tick / 100
        for _ in range(20):
            gate.admit(now, flooder)
        outcomes.append(gate.admit(now, agents[tick % 40]))
    assert outcomes == [None] * 100


def test_the_subnet_is_a_source_too() -> None:
    """An IPv6 host may use any address of its /64: a spray of addresses is
    still one subnet."""
    gate = AdmissionGate(max_connections=10_000, rate=100.0, burst=100, now=T0, fair=FAIR)
    spray = [gate.admit(T0, src(f"2001:db8:0:1::{n:x}")) for n in range(1, 200)]
    assert spray.count(None) == 50  # down to the reserve, then the subnet's share is spent
    assert spray[-1] is Refusal.SUBNET_RATE
    assert gate.admit(T0, src("2001:db8:0:2::1")) is None  # the next /64 is another source


def test_within_its_share_a_source_is_refused_only_by_the_global_limits() -> None:
    gate = AdmissionGate(max_connections=10_000, rate=1.0, burst=4, now=T0, fair=FAIR)
    agents = [src(f"192.0.{n}.1") for n in range(6)]
    assert [gate.admit(T0, agent) for agent in agents] == [None] * 4 + [Refusal.ADMISSION_RATE] * 2


def test_with_no_reserve_the_shares_never_refuse() -> None:
    fair = FairShare(address_rate=1.0, address_burst=1, reserve=0.0)
    gate = AdmissionGate(max_connections=10_000, rate=1.0, burst=50, now=T0, fair=fair)
    one = src("203.0.113.9")
    assert [gate.admit(T0, one) for _ in range(51)] == [None] * 50 + [Refusal.ADMISSION_RATE]


def test_handshakes_in_progress_are_capped_per_address() -> None:
    fair = FairShare(handshakes=3)
    gate = AdmissionGate(max_connections=10_000, rate=1_000.0, burst=1_000, now=T0, fair=fair)
    hanging = src("198.51.100.66")
    assert [gate.admit(T0, hanging) for _ in range(4)] == [None] * 3 + [
        Refusal.SOURCE_HANDSHAKES]
    assert gate.admit(T0, src("198.51.100.67")) is None  # another address of the subnet
    gate.handshake_ended(hanging)  # one handshake ended (done or failed)
    assert gate.admit(T0, hanging) is None
    assert gate.admit(T0, hanging) is Refusal.SOURCE_HANDSHAKES
    # A WebSocket client's TLS was done before the gate saw it: not counted.
    assert gate.admit(T0, hanging, handshake=False) is None
    assert gate.open == 6


def test_a_refusal_at_the_handshake_cap_spends_no_token() -> None:
    fair = FairShare(handshakes=1)
    gate = AdmissionGate(max_connections=10_000, rate=1.0, burst=2, now=T0, fair=fair)
    one = src("198.51.100.66")
    assert gate.admit(T0, one) is None
    for _ in range(10):
        assert gate.admit(T0, one) is Refusal.SOURCE_HANDSHAKES
    assert gate.admit(T0, src("192.0.2.1")) is None  # the last token was left


def test_an_unknown_source_meets_the_global_limits_only() -> None:
    gate = AdmissionGate(max_connections=10_000, rate=1.0, burst=20, now=T0, fair=FAIR)
    assert [gate.admit(T0) for _ in range(21)] == [None] * 20 + [Refusal.ADMISSION_RATE]
