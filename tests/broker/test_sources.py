"""broker.sources: a peer's source, the bounded per-source buckets, the
handshakes in progress; on an explicit clock."""

from __future__ import annotations

import pytest

from broker.sources import BucketTable, HandshakeCount, Source, source_of

T0 = 1000.0


@pytest.mark.parametrize(("host", "source"), [
    ("192.0.2.17", Source("192.0.2.17", "192.0.2.0/24")),
    ("::ffff:192.0.2.17", Source("192.0.2.17", "192.0.2.0/24")),
    ("2001:db8:1:2:aaaa::5", Source("2001:db8:1:2:aaaa::5", "2001:db8:1:2::/64")),
    ("2001:0db8:0001:0002:0000:0000:0000:0005", Source("2001:db8:1:2::5", "2001:db8:1:2::/64")),
    ("fe80::1%eth0", Source("fe80::1", "fe80::/64")),
])
def test_a_source_is_an_address_and_its_subnet(host: str, source: Source) -> None:
    assert source_of(host) == source


@pytest.mark.parametrize("host", ["", "/run/epns/front.sock", "localhost", "300.1.1.1"])
def test_what_is_not_an_address_has_no_source(host: str) -> None:
    assert source_of(host) is None


def test_a_new_key_starts_full_and_spends() -> None:
    table = BucketTable(rate=1.0, burst=2, max_keys=10)
    assert table.tokens("a", T0) == 2.0
    table.take("a", T0)
    table.take("a", T0)
    assert table.tokens("a", T0) == 0.0
    assert table.tokens("a", T0 + 0.5) == 0.5
    assert table.tokens("b", T0) == 2.0  # keys are apart


def test_a_key_refilled_is_forgotten() -> None:
    table = BucketTable(rate=1.0, burst=2, max_keys=10)
    table.take("idle", T0)
    table.take("busy", T0 + 0.5)
    table.take("new", T0 + 1.0)  # "idle" is full again: no different from new
    assert len(table) == 2
    assert table.tokens("idle", T0 + 1.0) == 2.0


def test_a_spray_of_addresses_is_bounded_and_the_busy_one_kept() -> None:
    table = BucketTable(rate=0.001, burst=5, max_keys=100)
    for number in range(10_000):
        now = T0 + number * 0.001
        # The flooder asks all along, refused once its burst is spent: it
        # stays the most recent key, never dropped to start full again.
        if table.tokens("flooder", now) >= 1.0:
            table.take("flooder", now)
        table.take(f"spray-{number}", now)
    assert len(table) == 100
    assert table.tokens("flooder", T0 + 10) < 1.0


def test_handshakes_are_counted_per_address_and_forgotten_at_zero() -> None:
    count = HandshakeCount()
    count.started("a")
    count.started("a")
    count.started("b")
    assert (count.count("a"), count.count("b"), count.count("c")) == (2, 1, 0)
    count.ended("a")
    count.ended("b")
    count.ended("b")  # one too many is harmless
    assert (count.count("a"), count.count("b"), len(count)) == (1, 0, 1)
