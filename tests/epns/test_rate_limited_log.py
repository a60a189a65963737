"""epns.logs.RateLimitedLog: one line per cause and interval, with the count
of what was held back (issue 15, item 5), on an explicit clock."""

from __future__ import annotations

import logging

import pytest

from epns.logs import RateLimitedLog, Throttle

NAME = "tests.rate_limited"


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=NAME)
    return caplog


def written(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == NAME]


def test_the_first_line_of_a_cause_is_written_at_once(lines: pytest.LogCaptureFixture) -> None:
    quiet = RateLimitedLog(logging.getLogger(NAME), interval=10.0)
    assert quiet.event("tls_failed", "handshake timed out", 0.0, peer="192.0.2.1:4000")
    assert written(lines) == ["tls_failed reason=\"handshake timed out\" peer=192.0.2.1:4000"]
    assert lines.records[0].levelno == logging.WARNING


def test_a_flood_costs_one_line_per_interval_with_the_count(
        lines: pytest.LogCaptureFixture) -> None:
    quiet = RateLimitedLog(logging.getLogger(NAME), interval=10.0)
    for tick in range(10_000):  # 10,000 failures over 25 s
        quiet.event("tls_failed", "WRONG_VERSION_NUMBER", tick * 0.0025, peer=f"p{tick}")
    assert written(lines) == [
        "tls_failed reason=WRONG_VERSION_NUMBER peer=p0",
        "tls_failed reason=WRONG_VERSION_NUMBER peer=p4000 suppressed=3999",
        "tls_failed reason=WRONG_VERSION_NUMBER peer=p8000 suppressed=3999",
    ]


def test_each_cause_has_its_own_interval(lines: pytest.LogCaptureFixture) -> None:
    quiet = RateLimitedLog(logging.getLogger(NAME), interval=10.0)
    assert quiet.event("admission_refused", "admission_rate", 0.0)
    assert quiet.event("admission_refused", "source_rate", 0.1)
    assert quiet.event("tls_failed", "admission_rate", 0.2)  # another event, another cause
    assert not quiet.event("admission_refused", "source_rate", 0.3)
    assert len(written(lines)) == 3


def test_flush_writes_the_count_of_a_flood_that_ended(lines: pytest.LogCaptureFixture) -> None:
    quiet = RateLimitedLog(logging.getLogger(NAME), interval=10.0)
    for tick in range(5):
        quiet.event("admission_refused", "source_rate", float(tick), peer="198.51.100.7:1")
    assert quiet.flush(9.0) == 0  # not an interval since the line yet
    assert quiet.flush(10.0) == 1
    assert quiet.flush(30.0) == 0  # nothing held back any more
    assert written(lines) == [
        "admission_refused reason=source_rate peer=198.51.100.7:1",
        "admission_refused reason=source_rate suppressed=4",
    ]
    # The flush line counts as the cause's line: the next one waits its interval.
    assert not quiet.event("admission_refused", "source_rate", 15.0)
    assert quiet.event("admission_refused", "source_rate", 20.0)
    assert written(lines)[-1] == "admission_refused reason=source_rate suppressed=1"


def test_the_level_is_the_logs(lines: pytest.LogCaptureFixture) -> None:
    quiet = RateLimitedLog(logging.getLogger(NAME), level=logging.INFO)
    quiet.event("connect_timeout", "no CONNECT", 0.0)
    assert lines.records[-1].levelno == logging.INFO


def test_a_reason_from_outside_is_quoted_and_bounded_in_memory(
        lines: pytest.LogCaptureFixture) -> None:
    quiet = RateLimitedLog(logging.getLogger(NAME), interval=10.0, max_causes=50)
    for number in range(1_000):
        quiet.event("invalid_connect", f"bad\nreason {number}", 0.0)
    assert all("\n" not in line for line in written(lines))
    assert len(quiet._throttle._last) <= 50


def test_the_throttle_says_what_is_overdue() -> None:
    throttle = Throttle(10.0)
    throttle.admit(("a",), 0.0)
    throttle.admit(("a",), 1.0)
    throttle.admit(("b",), 5.0)
    throttle.admit(("b",), 6.0)
    assert throttle.overdue(12.0) == [(("a",), 1)]
    assert throttle.overdue(12.0) == []
    assert throttle.overdue(15.0) == [(("b",), 1)]
