"""A strict parser of the Prometheus text format 0.0.4, for the tests
(prometheus_client is not a dependency): it refuses what Prometheus would,
and what a careless exposition gets wrong (a sample before its TYPE, a family
twice, a histogram without +Inf or with buckets that go down)."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}


@dataclass
class Family:
    name: str
    kind: str
    help: str
    # (sample name, labels as a sorted tuple of pairs) -> value
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)


def _value(text: str, line: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError(f"bad value {text!r} in {line!r}")
    return float(text)


def _labels(text: str, line: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    rest = text
    while rest:
        match = LABEL.match(rest)
        if match is None:
            raise ValueError(f"bad labels {text!r} in {line!r}")
        pairs.append((match.group(1), match.group(2)))
        rest = rest[match.end():]
        if rest.startswith(","):
            rest = rest[1:]
        elif rest:
            raise ValueError(f"bad labels {text!r} in {line!r}")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"a label twice in {line!r}")
    return tuple(sorted(pairs))


def parse(text: str) -> dict[str, Family]:
    """The families of ``text``; ValueError at the first thing Prometheus would refuse."""
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, words = line[7:].partition(" ")
            if not NAME.fullmatch(name) or name in helps:
                raise ValueError(f"bad or repeated HELP: {line!r}")
            helps[name] = words
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if not NAME.fullmatch(name) or kind not in TYPES or name in families:
                raise ValueError(f"bad or repeated TYPE: {line!r}")
            current = families[name] = Family(name, kind, helps.get(name, ""))
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)( -?\d+)?", line)
        if match is None:
            raise ValueError(f"bad sample line {line!r}")
        sample, labels, value = match.group(1), match.group(2) or "", match.group(3)
        if current is None or not any(
                sample == current.name + suffix
                for suffix in SUFFIXES.get(current.kind, ("",))):
            raise ValueError(f"sample {sample!r} outside its family's TYPE")
        key = (sample, _labels(labels, line))
        if key in current.samples:
            raise ValueError(f"sample twice: {line!r}")
        current.samples[key] = _value(value, line)
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
        if family.kind == "counter" and any(v < 0 for v in family.samples.values()):
            raise ValueError(f"negative counter {family.name}")
    return families


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (sample, labels), value in family.samples.items():
        if sample.endswith("_bucket"):
            le = dict(labels).get("le")
            if le is None:
                raise ValueError(f"{family.name}: a bucket without le")
            rest = tuple(pair for pair in labels if pair[0] != "le")
            series.setdefault(rest, []).append((_value(le, le), value))
    for rest, buckets in series.items():
        buckets.sort()
        if buckets[-1][0] != math.inf:
            raise ValueError(f"{family.name}{rest}: no +Inf bucket")
        if any(b[1] < a[1] for a, b in itertools.pairwise(buckets)):
            raise ValueError(f"{family.name}{rest}: buckets not cumulative")
        if family.samples.get((family.name + "_count", rest)) != buckets[-1][1]:
            raise ValueError(f"{family.name}{rest}: _count is not the +Inf bucket")


def value(families: dict[str, Family], sample: str, **labels: str) -> float:
    """One sample's value; 0 when the family has no such sample (a counter
    not bumped yet); KeyError when no family holds that name."""
    for family in families.values():
        for (name, pairs), found in family.samples.items():
            if name == sample and dict(pairs) == labels:
                return found
    if not any(sample.startswith(name) for name in families):
        raise KeyError(sample)
    return 0.0


def sample_names(families: dict[str, Family]) -> set[str]:
    """Every name a query may use: the families' and their samples'."""
    names = set(families)
    for family in families.values():
        names.update(name for name, _ in family.samples)
    return names
