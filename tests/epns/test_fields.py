"""The checks every field from an agent passes (``epns.fields``), and the
log's defences against forged lines (``epns.logs``)."""

from __future__ import annotations

import json
import logging

import pytest

from epns import fields, logs
from epns.errors import MalformedMessage


@pytest.mark.parametrize(("value", "rule"), [
    (5, "expected a string"),
    (None, "expected a string"),
    (["x"], "expected a string"),
    ("x" * 11, "longer than 10 characters"),
    ("a\nb", "holds a control or unprintable"),
    ("a\x00b", "holds a control or unprintable"),
    ("a\x85b", "holds a control or unprintable"),
    ("a\u2028b", "holds a control or unprintable"),
    ("\ud800", "holds a lone surrogate"),
])
def test_text_refuses(value: object, rule: str) -> None:
    with pytest.raises(MalformedMessage, match=f"^presence.hostname: {rule}"):
        fields.text(value, "presence.hostname", max_length=10)


def test_text_keeps_what_a_person_writes() -> None:
    assert fields.text("Büro-PC 7", "h", max_length=10) == "Büro-PC 7"
    assert fields.optional_text(None, "h", max_length=1) is None
    with pytest.raises(MalformedMessage, match="non-empty"):
        fields.text("", "h", max_length=5, empty=False)


def test_prose_is_cut_and_its_control_characters_written_out() -> None:
    assert fields.prose("line 1\r\n\tline 2", "d", max_length=100) == "line 1\r\n\tline 2"
    assert fields.prose("x" * 50, "d", max_length=10) == "x" * 10
    assert fields.prose("a\x1b[31mred\x00", "d", max_length=100) == "a\\x1b[31mred\\x00"
    assert fields.prose("\udfff!", "d", max_length=10) == "\ufffd!"
    with pytest.raises(MalformedMessage, match="expected a string"):
        fields.prose(["x"], "d", max_length=10)


@pytest.mark.parametrize("value", ["", "a b", "a\tb", "é", "x" * 129, 7, None])
def test_identifier_refuses(value: object) -> None:
    with pytest.raises(MalformedMessage, match=r"^event\.ref: expected an id"):
        fields.identifier(value, "event.ref")


@pytest.mark.parametrize("value", [True, "1", None, float("nan"), float("inf"),
                                   -float("inf"), 10**400, -1, fields.MAX_TIME + 1])
def test_timestamp_refuses(value: object) -> None:
    with pytest.raises(MalformedMessage, match=r"^event\.at: expected a"):
        fields.timestamp(value, "event.at")


def test_numbers_in_range() -> None:
    assert fields.timestamp(1_700_000_000, "at") == 1_700_000_000.0
    assert fields.integer(8, "p", low=0, high=32) == 8
    for bad in (True, 8.0, 33, -1):
        with pytest.raises(MalformedMessage):
            fields.integer(bad, "p", low=0, high=32)
    assert fields.flag(False, "ok") is False
    with pytest.raises(MalformedMessage):
        fields.flag(0, "ok")


def test_collections_are_bounded() -> None:
    assert fields.array([1, 2], "l", max_items=2) == [1, 2]
    with pytest.raises(MalformedMessage, match=r"^l: 3 items, at most 2"):
        fields.array([1, 2, 3], "l", max_items=2)
    with pytest.raises(MalformedMessage, match="expected an array"):
        fields.array({"a": 1}, "l", max_items=2)
    with pytest.raises(MalformedMessage, match="expected an object"):
        fields.mapping([], "m")


def test_a_refusal_quotes_only_the_head_of_a_long_value() -> None:
    with pytest.raises(MalformedMessage) as raised:
        fields.text("y" * 5000, "presence.route", max_length=128)
    assert len(str(raised.value)) < 150


# --- the log ---------------------------------------------------------------------


def _line(caplog: pytest.LogCaptureFixture, **values: object) -> str:
    handler = logging.StreamHandler()
    handler.setFormatter(logs._TextFormatter("%(message)s"))
    logger = logging.getLogger("tests.fields")
    with caplog.at_level(logging.INFO, logger="tests.fields"):
        logs.event(logger, "seen", **values)
    return handler.format(caplog.records[-1])


@pytest.mark.parametrize("value", [
    "x\n2026-01-01T00:00:00 INFO server_push.web.api wakeup_satisfied id=1",
    "x\r\nforged", "a b", 'a"b', "", "\u2028forged", "a\x1b[2Jb",
])
def test_a_value_from_outside_cannot_start_a_line_or_fake_a_field(
        caplog: pytest.LogCaptureFixture, value: str) -> None:
    line = _line(caplog, ref=value, ok=True)
    assert "\n" not in line
    assert "\r" not in line
    assert line.startswith("seen ref=\"")
    assert line.endswith(" ok=True")
    assert json.loads(line[len("seen ref="):-len(" ok=True")]) == value


def test_plain_values_stay_plain(caplog: pytest.LogCaptureFixture) -> None:
    assert _line(caplog, agent="pc-7", route="proxy:443") == "seen agent=pc-7 route=proxy:443"


def test_a_message_not_from_event_is_one_line() -> None:
    formatter = logs._TextFormatter("%(message)s")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "peer said %s", ("a\nb",),
                               None)
    assert formatter.format(record) == "peer said a\\x0ab"


def test_the_throttle_admits_one_line_per_key_and_interval() -> None:
    throttle = logs.Throttle(60.0)
    assert throttle.admit(("a", "malformed"), 0.0) == (True, 0)
    assert throttle.admit(("a", "malformed"), 1.0) == (False, 0)
    assert throttle.admit(("b", "malformed"), 1.0) == (True, 0)
    assert throttle.admit(("a", "malformed"), 2.0) == (False, 0)
    assert throttle.admit(("a", "malformed"), 61.0) == (True, 2)
    assert throttle.admit(("a", "malformed"), 122.0) == (True, 0)


def test_the_throttle_is_bounded_in_memory() -> None:
    throttle = logs.Throttle(60.0, max_keys=100)
    for n in range(10_000):
        throttle.admit((str(n),), float(n))
    assert len(throttle._last) <= 100
