"""broker.idle: the keep-alive sweep looks at due connections only."""

from __future__ import annotations

from broker.idle import IdleWatch

T0 = 1000.0


class _Conn:
    """A connection as the watch sees it: a deadline that moves when it speaks."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.idle_filed: float | None = None


def _deadline(conn: _Conn) -> float | None:
    return conn.deadline


def test_only_connections_past_their_deadline_expire() -> None:
    watch: IdleWatch[_Conn] = IdleWatch()
    early, late = _Conn(T0 + 10), _Conn(T0 + 20)
    watch.watch(late, T0 + 20)
    watch.watch(early, T0 + 10)
    assert watch.expired(T0 + 10, _deadline) == []  # not before: silent for exactly the limit
    assert watch.expired(T0 + 11, _deadline) == [early]
    assert watch.expired(T0 + 21, _deadline) == [late]
    assert len(watch) == 0


def test_a_connection_that_spoke_is_filed_again_at_its_new_deadline() -> None:
    watch: IdleWatch[_Conn] = IdleWatch()
    conn = _Conn(T0 + 10)
    watch.watch(conn, T0 + 10)
    conn.deadline = T0 + 30  # it sent something at T0 + 20
    assert watch.expired(T0 + 15, _deadline) == []
    assert len(watch) == 1
    assert watch.expired(T0 + 25, _deadline) == []
    assert watch.expired(T0 + 31, _deadline) == [conn]


def test_an_idle_fleet_costs_nothing_per_check() -> None:
    calls = 0

    def counted(conn: _Conn) -> float | None:
        nonlocal calls
        calls += 1
        return conn.deadline

    watch: IdleWatch[_Conn] = IdleWatch()
    fleet = [_Conn(T0 + 450 + n / 1000) for n in range(10_000)]
    for conn in fleet:
        watch.watch(conn, conn.deadline or 0)
    for second in range(1, 60):
        assert watch.expired(T0 + second, counted) == []
    assert calls == 0


def test_closed_and_collected_connections_are_dropped() -> None:
    watch: IdleWatch[_Conn] = IdleWatch()
    closed, kept = _Conn(None), _Conn(T0 + 10)
    watch.watch(closed, T0 + 5)
    watch.watch(kept, T0 + 10)
    gone = _Conn(T0 + 1)
    watch.watch(gone, T0 + 1)
    del gone
    assert watch.expired(T0 + 11, _deadline) == [kept]
    assert len(watch) == 0


def test_prune_bounds_the_entries_of_closed_connections() -> None:
    watch: IdleWatch[_Conn] = IdleWatch()
    live = [_Conn(T0 + 450) for _ in range(10)]
    dead = [_Conn(None) for _ in range(2000)]
    for conn in live + dead:
        watch.watch(conn, T0 + 450)
    del conn
    dead.clear()  # closed and collected
    watch.prune(len(live))
    assert len(watch) == len(live)


def test_a_connection_is_filed_once() -> None:
    """Filed at accept (the CONNECT deadline) and again at CONNECT (the
    keep-alive one, later): one entry, which files it again when due. Two
    entries per connection made every check rebuild the heap (quadratic)."""
    watch: IdleWatch[_Conn] = IdleWatch()
    conn = _Conn(T0 + 10)
    assert watch.watch(conn, T0 + 10)
    conn.deadline = T0 + 450
    assert not watch.watch(conn, T0 + 450)
    assert len(watch) == 1
    assert watch.expired(T0 + 11, _deadline) == []
    assert len(watch) == 1
    assert watch.next_deadline() == T0 + 450


def test_an_earlier_deadline_is_filed_and_the_later_entry_goes_stale() -> None:
    watch: IdleWatch[_Conn] = IdleWatch()
    conn = _Conn(T0 + 10)
    watch.watch(conn, T0 + 10)
    conn.deadline = T0 + 2  # keep-alive 1 s: sooner than the CONNECT deadline
    assert watch.watch(conn, T0 + 2)
    assert watch.expired(T0 + 3, _deadline) == [conn]
    assert watch.expired(T0 + 11, _deadline) == []  # the stale entry is dropped
    assert len(watch) == 0


def test_a_steady_fleet_never_rebuilds_the_heap() -> None:
    watch: IdleWatch[_Conn] = IdleWatch()
    fleet = [_Conn(T0 + 450 + n / 1000) for n in range(5_000)]
    for conn in fleet:
        watch.watch(conn, T0 + 10)  # the CONNECT deadline first
        watch.watch(conn, conn.deadline or 0)
    heap_before = watch._heap
    assert watch.expired(T0 + 11, _deadline) == []
    watch.prune(len(fleet))
    assert watch._heap is heap_before
    assert len(watch) == len(fleet)
