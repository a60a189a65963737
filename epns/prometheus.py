"""The Prometheus text exposition format (0.0.4), sans-IO: the broker's and
the server's metrics are written with the same few lines.

    text = Exposition()
    text.family("epns_broker_drops_total", "counter", "Messages dropped.",
                labelled("reason", drops))
    body = text.render()

Histograms (``Histogram``) keep their bucket counts; ``Histogram.samples``
writes them as the ``_bucket``, ``_sum`` and ``_count`` lines of one family.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

__all__ = ["Exposition", "Histogram", "label_set", "labelled", "labelled_by", "number",
           "single"]

Samples = list[tuple[str, float]]
# A tuple of label values, one per key.
Values = TypeVar("Values", bound=tuple[str, ...])


def _escape(value: str) -> str:
    # The three characters the format escapes in a label value.
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: an integer in full (``%g`` would round a counter past a
    million to six digits), else the shortest float that reads back equal."""
    if value.is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def label_set(keys: Sequence[str], values: Sequence[str]) -> str:
    """``{k1="v1",k2="v2"}`` with the values escaped; empty without keys."""
    if not keys:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in zip(keys, values,
                                                                         strict=True)) + "}"


def labelled(key: str, counts: Mapping[str, int | float]) -> Samples:
    """One sample per label value, sorted: ``{key="value"} count``."""
    return [(label_set((key,), (value,)), float(count))
            for value, count in sorted(counts.items())]


def labelled_by(keys: Sequence[str], counts: Mapping[Values, int | float]) -> Samples:
    """One sample per tuple of label values (one value per key), sorted."""
    return [(label_set(keys, values), float(count)) for values, count in sorted(counts.items())]


def single(value: float) -> Samples:
    """One sample without labels."""
    return [("", float(value))]


class Histogram:
    """Observations counted into cumulative buckets (upper bounds, seconds),
    as Prometheus keeps them: an observation costs one bisection."""

    def __init__(self, bounds: Sequence[float]) -> None:
        """``bounds``: distinct and increasing (constants of the caller)."""
        self.bounds = tuple(float(b) for b in bounds)
        # Per bucket, observations that fell in it alone (the last: above all).
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation (a negative one, from a clock step, as 0)."""
        value = max(0.0, value)
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self, keys: Sequence[str] = (), values: Sequence[str] = ()) -> list[
            tuple[str, str, float]]:
        """(suffix, labels, value) lines: cumulative buckets up to ``+Inf``,
        then the sum and the count, under the labels given."""
        lines: list[tuple[str, str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self._counts, strict=True):
            total += count
            upper = "+Inf" if bound == math.inf else f"{bound:g}"
            lines.append(("_bucket", label_set((*keys, "le"), (*values, upper)), float(total)))
        base = label_set(keys, values)
        lines.append(("_sum", base, self.sum))
        lines.append(("_count", base, float(self.count)))
        return lines


class Exposition:
    """Families in the order they are added, rendered as one text."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, text: str, samples: Samples) -> None:
        """A metric family: its HELP and TYPE lines, then its samples."""
        self._lines.append(f"# HELP {name} {text}")
        self._lines.append(f"# TYPE {name} {kind}")
        self._lines.extend(f"{name}{labels} {number(value)}" for labels, value in samples)

    def histograms(self, name: str, text: str, keys: Sequence[str],
                   histograms: Mapping[tuple[str, ...], Histogram]) -> None:
        """A histogram family: one histogram per tuple of label values."""
        self._lines.append(f"# HELP {name} {text}")
        self._lines.append(f"# TYPE {name} histogram")
        for values, histogram in sorted(histograms.items()):
            self._lines.extend(f"{name}{suffix}{labels} {number(value)}"
                               for suffix, labels, value in histogram.samples(keys, values))

    def render(self) -> str:
        """The exposition, ending in a newline."""
        return "\n".join(self._lines) + "\n"
