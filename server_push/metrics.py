"""The server's metrics in the Prometheus text format, served at ``/metrics``
(``api.py``, with an API token).

Counters are plain integers bumped where things happen; the text is rendered
only when scraped. Labels name causes, never agents: a fleet of 10,000 would
otherwise be 10,000 series, and the per-agent detail is in the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from server_push.mqtt_link import LinkHealth

__all__ = ["ServerMetrics"]


@dataclass
class ServerMetrics:
    """Everything the server counts about agents' input and its broker link."""

    link: LinkHealth
    link_up: Callable[[], bool]
    # Messages from agents dropped before any handler ran, by reason:
    # malformed, over_budget. A handler's own failure is the link's count.
    agent_messages_dropped: Counter[str] = field(default_factory=Counter)
    # Sync reports refused by a per-agent budget, by budget.
    budget_refusals: Counter[str] = field(default_factory=Counter)
    history_rows_pruned: int = 0

    def render(self) -> str:
        """The Prometheus text exposition."""
        lines: list[str] = []

        def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        def labelled(key: str, counts: Counter[str]) -> list[tuple[str, float]]:
            return [(f'{{{key}="{k}"}}', float(v)) for k, v in sorted(counts.items())]

        family("epns_server_broker_link_up", "gauge",
               "1 while the server's MQTT session to the broker is up.",
               [("", 1.0 if self.link_up() else 0.0)])
        family("epns_server_broker_link_restarts_total", "counter",
               "Times the broker link ended and was started again.",
               [("", float(self.link.restarts))])
        dropped = Counter(self.agent_messages_dropped)
        dropped["handler_failed"] = self.link.handler_failures
        family("epns_server_agent_messages_dropped_total", "counter",
               "Messages from agents dropped, by reason.", labelled("reason", dropped))
        family("epns_server_budget_refusals_total", "counter",
               "Agent requests refused by a per-agent budget, by budget.",
               labelled("budget", self.budget_refusals))
        family("epns_server_history_rows_pruned_total", "counter",
               "Agent history lines deleted beyond budgets.history_rows per agent.",
               [("", float(self.history_rows_pruned))])
        return "\n".join(lines) + "\n"
