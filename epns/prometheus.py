"""The Prometheus text exposition format (0.0.4), sans-IO: the broker's and
the server's metrics are written with the same few lines.

    text = Exposition()
    text.family("epns_broker_drops_total", "counter", "Messages dropped.",
                labelled("reason", drops))
    body = text.render()
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Exposition", "labelled", "single"]

Samples = list[tuple[str, float]]


def labelled(key: str, counts: Mapping[str, int | float]) -> Samples:
    """One sample per label value, sorted: ``{key="value"} count``."""
    return [(f'{{{key}="{value}"}}', float(count)) for value, count in sorted(counts.items())]


def single(value: float) -> Samples:
    """One sample without labels."""
    return [("", float(value))]


class Exposition:
    """Families in the order they are added, rendered as one text."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, text: str, samples: Samples) -> None:
        """A metric family: its HELP and TYPE lines, then its samples."""
        self._lines.append(f"# HELP {name} {text}")
        self._lines.append(f"# TYPE {name} {kind}")
        self._lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    def render(self) -> str:
        """The exposition, ending in a newline."""
        return "\n".join(self._lines) + "\n"
