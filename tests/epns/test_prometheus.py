"""epns.prometheus: histograms, label escaping and sample values, read back
by the tests' strict parser."""

from __future__ import annotations

from epns.prometheus import Exposition, Histogram, labelled_by, number, single
from tests.support.prometheus_text import parse, value


def test_a_histogram_is_cumulative_with_its_sum_and_count() -> None:
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.1, 0.5, 5.0, -1.0):
        histogram.observe(seconds)
    text = Exposition()
    text.histograms("t_seconds", "Test.", ("step",), {("a",): histogram})
    families = parse(text.render())
    # 0.1 is in le="0.1" (upper bounds are inclusive); -1 (a clock step) is 0.
    assert value(families, "t_seconds_bucket", step="a", le="0.1") == 2
    assert value(families, "t_seconds_bucket", step="a", le="1") == 3
    assert value(families, "t_seconds_bucket", step="a", le="+Inf") == 4
    assert value(families, "t_seconds_count", step="a") == 4
    assert value(families, "t_seconds_sum", step="a") == 5.6


def test_label_values_are_escaped_and_read_back() -> None:
    text = Exposition()
    odd = 'a"b\\c\nd'
    text.family("t_total", "counter", "Test.", labelled_by(("route", "status"),
                                                           {(odd, "200"): 3}))
    families = parse(text.render())
    assert value(families, "t_total", route='a\\"b\\\\c\\nd', status="200") == 3


def test_large_counters_keep_every_digit() -> None:
    # %g wrote 1234567 as 1.23457e+06: a counter past a million lost digits.
    assert number(1234567.0) == "1234567"
    assert number(0.25) == "0.25"
    assert number(float("inf")) == "+Inf"
    text = Exposition()
    text.family("t_total", "counter", "Test.", single(1234567))
    assert value(parse(text.render()), "t_total") == 1234567
