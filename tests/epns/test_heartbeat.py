"""epns.heartbeat: the ping interval learnt per route and network."""

from __future__ import annotations

import pytest

from epns.heartbeat import MIN_INTERVAL, RELEARN_AFTER, Heartbeat, network_key


def _answer(beat: Heartbeat, times: int) -> list[float]:
    """Answer ``times`` pings at the current interval; the intervals seen."""
    seen = []
    for _ in range(times):
        beat.answered(beat.interval)
        seen.append(round(beat.interval, 1))
    return seen


def test_a_path_that_allows_it_climbs_to_the_keepalive() -> None:
    beat = Heartbeat.start(45, ceiling=300)
    assert beat.interval == 45
    assert _answer(beat, 3) == [45, 45, 67.5]
    assert _answer(beat, 12) == [67.5, 67.5, 101.2, 101.2, 101.2, 151.9, 151.9, 151.9,
                                 227.8, 227.8, 227.8, 300]
    assert _answer(beat, 3) == [300, 300, 300]


def test_a_60_second_nat_settles_the_interval_under_it() -> None:
    beat = Heartbeat.start(45, ceiling=300)
    _answer(beat, 3)  # 45 s answered three times: tries 67.5 s
    beat.lost(67.5, now=1000.0)  # the NAT forgot the flow after 60 s
    assert beat.interval == 45
    assert beat.settled_at == 1000.0
    assert _answer(beat, 10) == [45] * 10  # settled: no more probing
    beat.within(300, now=1000.0 + RELEARN_AFTER)
    assert _answer(beat, 3) == [45, 45, 67.5]  # a day later, it tries again


def test_a_loss_before_anything_was_answered_backs_off() -> None:
    beat = Heartbeat.start(45, ceiling=300)
    beat.lost(45, now=0.0)
    assert beat.interval == 30
    beat.lost(30, now=1.0)
    assert beat.interval == 20
    beat.lost(20, now=2.0)
    assert beat.interval == MIN_INTERVAL


@pytest.mark.parametrize(("start", "ceiling", "interval"), [(45, 10, 10), (45, 300, 45),
                                                          (5, 300, MIN_INTERVAL)])
def test_the_interval_stays_within_its_bounds(start: float, ceiling: float,
                                              interval: float) -> None:
    assert Heartbeat.start(start, ceiling).interval == interval


def test_a_record_survives_the_state_file_and_a_new_ceiling() -> None:
    beat = Heartbeat.start(45, ceiling=300)
    _answer(beat, 3)
    again = Heartbeat.from_dict(beat.to_dict(), 45, 300)
    assert again == beat
    assert again.within(60, now=0.0).interval == 60  # a shorter hint from the server
    assert Heartbeat.from_dict({"interval": "x"}, 45, 300) == Heartbeat.start(45, 300)


def test_the_network_key_names_route_and_addresses() -> None:
    home = network_key("direct:8883", frozenset({"198.18.1.2", "fe80::1"}))
    assert home == "direct:8883|198.18.1.2,fe80::1"
    assert network_key("direct:8883", frozenset({"198.18.1.3"})) != home


def test_only_a_ping_after_the_whole_silence_counts_toward_a_raise() -> None:
    beat = Heartbeat.start(45, ceiling=300)
    for _ in range(10):
        assert beat.answered(5.0) is False  # a probe, or a ping soon after traffic
    assert beat.interval == 45
    assert _answer(beat, 3)[-1] == 67.5
