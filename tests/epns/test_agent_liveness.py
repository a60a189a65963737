"""epns.liveness: the agent pings on time and calls a silent path dead
within a bound, without paho's clock; epns.netwatch: when it checks at once."""

from __future__ import annotations

import pytest

from epns.liveness import MAX_ANSWER, MIN_ANSWER, Liveness, Step, answer_timeout
from epns.netwatch import Change, Look, Watch


def test_an_idle_connection_pings_exactly_on_the_keepalive() -> None:
    live = Liveness(60, now=0.0)
    assert live.due() == 60.0
    assert live.check(59.9) is Step.WAIT
    assert live.check(60.0) is Step.PING
    live.heard(60.2)  # the PINGRESP
    assert live.due() == 120.0
    assert live.check(120.0) is Step.PING


def test_a_ping_without_an_answer_is_a_dead_path_within_the_bound() -> None:
    live = Liveness(300, now=0.0)
    assert live.check(300.0) is Step.PING
    assert live.due() == 300.0 + MAX_ANSWER
    assert live.check(329.0) is Step.WAIT
    assert live.check(330.0) is Step.DEAD
    assert live.deaf_bound == 330.0


def test_traffic_from_the_agent_alone_still_pings_to_hear_the_broker() -> None:
    live = Liveness(60, now=0.0)
    live.sent(50.0)
    # Sent recently, but heard nothing since 0: a ping asks the path.
    assert live.check(60.0) is Step.PING


def test_traffic_both_ways_postpones_the_ping() -> None:
    live = Liveness(60, now=0.0)
    live.sent(50.0)
    live.heard(55.0)
    assert live.due() == 110.0
    assert live.check(60.0) is Step.WAIT


def test_bytes_before_the_ping_do_not_answer_it() -> None:
    live = Liveness(10, now=0.0)
    assert live.check(10.0) is Step.PING
    live.heard(9.0)  # reported late, read before the ping went out
    assert live.ping_sent == 10.0
    live.heard(10.5)
    assert live.ping_sent is None


@pytest.mark.parametrize(("keepalive", "answer"), [
    (5, MIN_ANSWER), (20, 10.0), (60, MAX_ANSWER), (300, MAX_ANSWER),
])
def test_the_answer_timeout_is_bounded(keepalive: int, answer: float) -> None:
    assert answer_timeout(keepalive) == answer


def test_a_probe_pings_at_once_and_needs_its_answer() -> None:
    live = Liveness(300, now=0.0)
    assert live.probe(10.0) is True
    assert live.probe(11.0) is False  # one ping out at a time
    assert live.due() == 10.0 + MAX_ANSWER
    assert live.check(39.0) is Step.WAIT
    assert live.check(40.0) is Step.DEAD
    answered = Liveness(300, now=0.0)
    answered.probe(10.0)
    answered.heard(10.1)
    assert answered.due() == 310.0  # a keep-alive after the probe


# --- epns.netwatch ---------------------------------------------------------------------


def _look(addresses: tuple[str, ...], wall: float, mono: float) -> Look:
    return Look(frozenset(addresses), wall, mono)


def test_a_new_address_is_a_change() -> None:
    watch = Watch(_look(("198.18.1.2",), 1000.0, 5.0))
    assert watch.look(_look(("198.18.1.2",), 1010.0, 15.0)) is Change.NONE
    assert watch.look(_look(("198.18.1.3",), 1020.0, 25.0)) is Change.ADDRESSES
    assert watch.look(_look(("198.18.1.3",), 1030.0, 35.0)) is Change.NONE


def test_a_wall_clock_jump_ahead_of_the_monotonic_one_is_a_resume() -> None:
    watch = Watch(_look(("198.18.1.2",), 1000.0, 5.0))
    # Ten minutes asleep: the monotonic clock stood still.
    assert watch.look(_look(("198.18.1.2",), 1610.0, 15.0)) is Change.RESUMED
    # NTP slewing a second is no sleep; a clock set back is none either.
    assert watch.look(_look(("198.18.1.2",), 1621.0, 25.0)) is Change.NONE
    assert watch.look(_look(("198.18.1.2",), 1500.0, 35.0)) is Change.NONE


def test_a_probe_is_told_apart_from_a_scheduled_ping() -> None:
    live = Liveness(60, now=0.0)
    live.probe(10.0)
    assert live.probing is True
    live.heard(10.2)
    assert live.check(70.2) is Step.PING
    assert live.probing is False
