"""The server's metrics in the Prometheus text format, served at ``/metrics``
(``api.py``, with an API token).

Counters are plain integers bumped where things happen; the text is rendered
only when scraped. Labels name causes, never agents: a fleet of 10,000 would
otherwise be 10,000 series, and the per-agent detail is in the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from epns.prometheus import Exposition, labelled, single
from server_push.link.mqtt_link import LinkHealth

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
    # Renewal requests by outcome: renewed, or the refusal's code.
    renewals: Counter[str] = field(default_factory=Counter)

    def render(self, expiring: Mapping[str, int] | None = None,
               expiry_unknown: int = 0) -> str:
        """The Prometheus text exposition; ``expiring`` counts live agents
        whose identity expires within each window (by label), read from the
        database at the scrape."""
        dropped = Counter(self.agent_messages_dropped)
        dropped["handler_failed"] = self.link.handler_failures
        text = Exposition()
        text.family("epns_server_broker_link_up", "gauge",
                    "1 while the server's MQTT session to the broker is up.",
                    single(1.0 if self.link_up() else 0.0))
        text.family("epns_server_broker_link_restarts_total", "counter",
                    "Times the broker link ended and was started again.",
                    single(self.link.restarts))
        text.family("epns_server_agent_messages_dropped_total", "counter",
                    "Messages from agents dropped, by reason.", labelled("reason", dropped))
        text.family("epns_server_budget_refusals_total", "counter",
                    "Agent requests refused by a per-agent budget, by budget.",
                    labelled("budget", self.budget_refusals))
        text.family("epns_server_history_rows_pruned_total", "counter",
                    "Agent history lines deleted beyond budgets.history_rows per agent.",
                    single(self.history_rows_pruned))
        text.family("epns_agent_renewals_total", "counter",
                    "Identity renewals asked by agents, by outcome: renewed, or the "
                    "refusal's code.", labelled("outcome", self.renewals))
        if expiring is not None:
            text.family("epns_agent_identities_expiring", "gauge",
                        "Live agents whose identity expires within the window "
                        "(expired: already has).", labelled("within", expiring))
            text.family("epns_agent_identities_expiry_unknown", "gauge",
                        "Live agents whose identity's expiry is not known yet "
                        "(until their next sync or renewal).", single(expiry_unknown))
        return text.render()
