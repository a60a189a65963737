"""The server's metrics in the Prometheus text format, served at ``/metrics``
(``api.py``, with an API token; every metric in docs/metrics.md).

Counters and histograms are plain numbers bumped in memory where things
happen (a sync costs no query for them); the text is rendered only when
scraped. They are this replica's own: with several replicas, sum them.
The gauges read from the database (``FleetGauges``, ``fleet/gauges.py``) are
the whole fleet's and the same on every replica: take one, never the sum.
Labels name causes, states and route templates, never agents: a fleet of
10,000 would otherwise be 10,000 series, and the per-agent detail is in the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from epns.prometheus import Exposition, Histogram, labelled, labelled_by, single
from epns.wakeup import WakeState
from server_push.link.mqtt_link import LinkHealth
from server_push.link.outbox import OutboxCounts

__all__ = ["WAKE_STATES", "CampaignCounts", "FleetGauges", "ServerMetrics"]

# Seconds from the API call: a wake-up of an online agent is delivered in
# tens of milliseconds; one that waits for its agent to come back, minutes
# (up to the TTL, 15 min by default).
WAKE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# Seconds the server spends on one sync step, admission wait included.
SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAKE_STATES = tuple(state.value for state in WakeState)


@dataclass(frozen=True, slots=True)
class FleetGauges:
    """What the database says at a scrape: the fleet's, not one replica's."""

    # Wake targets kept in the database, by state.
    wake_targets: Mapping[str, int]
    # Live (not revoked) agents by presence: online, stale, offline, unknown.
    agents: Mapping[str, int]
    outbox_pending: int
    # Seconds since the oldest staged command was made; 0 when none is.
    outbox_oldest_age: float
    # Live agents whose identity expires within each window (by label).
    expiring: Mapping[str, int]
    expiry_unknown: int
    # When these were read (UNIX s): a cached answer says how old it is.
    read_at: float


@dataclass
class CampaignCounts:
    """Wake campaigns on this replica (``fleet/campaigns.py``): what its
    scheduler's last round saw, and what it did since the start."""

    # Runs this replica is advancing, and their targets waiting for the cap.
    running: int = 0
    queued: int = 0
    # Runs ended, by outcome: done, missed.
    runs: Counter[str] = field(default_factory=Counter)
    # Sends the campaigns made, by kind: wake (one per agent), wol (one per machine).
    sends: Counter[str] = field(default_factory=Counter)


def _wake_histograms() -> dict[str, Histogram]:
    return {"delivered": Histogram(WAKE_BUCKETS), "satisfied": Histogram(WAKE_BUCKETS)}


@dataclass
class ServerMetrics:
    """Everything the server counts about agents' input and its broker link."""

    link: LinkHealth
    link_up: Callable[[], bool]
    outbox: OutboxCounts
    # Messages from agents dropped before any handler ran, by reason:
    # malformed, over_budget. A handler's own failure is the link's count.
    agent_messages_dropped: Counter[str] = field(default_factory=Counter)
    # Sync reports refused by a per-agent budget, by budget.
    budget_refusals: Counter[str] = field(default_factory=Counter)
    history_rows_pruned: int = 0
    # Renewal requests by outcome: renewed, or the refusal's code.
    renewals: Counter[str] = field(default_factory=Counter)
    # Wake targets this replica moved into each state (requested: accepted).
    wake_transitions: Counter[str] = field(
        default_factory=lambda: Counter(dict.fromkeys(WAKE_STATES, 0)))
    # Seconds from the API call to delivered, to satisfied, per target.
    wake_latency: dict[str, Histogram] = field(default_factory=_wake_histograms)
    # Sync steps (report, reply) by outcome: ok, or the refusal's code.
    syncs: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Accepted sync reports by the agent's reason (wake, interval, ...).
    sync_reasons: Counter[str] = field(default_factory=Counter)
    sync_seconds: dict[str, Histogram] = field(default_factory=lambda: {
        "report": Histogram(SYNC_BUCKETS), "reply": Histogram(SYNC_BUCKETS)})
    # Refused sync steps by HTTP status and code (401 unauthorized, 429 busy...).
    sync_refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    # HTTP requests by route template (not path: one series per route),
    # method and status.
    http_requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    campaigns: CampaignCounts = field(default_factory=CampaignCounts)

    def observe_wake(self, state: str, requested_at: float, at: float, count: int = 1) -> None:
        """``count`` targets requested at ``requested_at`` reached ``state``
        at ``at``; delivered and satisfied also feed their latency."""
        self.wake_transitions[state] += count
        histogram = self.wake_latency.get(state)
        if histogram is not None:
            for _ in range(count):
                histogram.observe(at - requested_at)

    def observe_sync(self, step: str, seconds: float, status: int, code: str | None) -> None:
        """One sync step's end: ok (``code`` None) or refused with ``status``."""
        self.sync_seconds[step].observe(seconds)
        self.syncs[(step, code or "ok")] += 1
        if code is not None:
            self.sync_refusals[(str(status), code)] += 1

    def render(self, fleet: FleetGauges | None = None) -> str:
        """The Prometheus text exposition; ``fleet``: the database's gauges,
        read at the scrape (``fleet/gauges.py``)."""
        dropped = Counter(self.agent_messages_dropped)
        dropped["handler_failed"] = self.link.handler_failures
        text = Exposition()
        self._render_wakes_and_syncs(text)
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
        text.family("epns_server_http_requests_total", "counter",
                    "HTTP requests answered, by route template, method and status.",
                    labelled_by(("route", "method", "status"), self.http_requests))
        text.family("epns_server_outbox_published_total", "counter",
                    "Commands the broker took from the outbox (PUBACK).",
                    single(self.outbox.published))
        text.family("epns_server_outbox_publish_failures_total", "counter",
                    "Publishes of outbox commands the broker did not take (kept for a retry).",
                    single(self.outbox.publish_failures))
        text.family("epns_server_outbox_expired_unsent_total", "counter",
                    "Outbox commands dropped unsent because they expired first.",
                    single(self.outbox.expired_unsent))
        self._render_campaigns(text)
        if fleet is not None:
            _render_fleet(text, fleet)
        return text.render()

    def _render_campaigns(self, text: Exposition) -> None:
        counts = self.campaigns
        text.family("epns_server_campaign_runs_running", "gauge",
                    "Campaign runs this replica advanced in its scheduler's last round.",
                    single(counts.running))
        text.family("epns_server_campaign_targets_queued", "gauge",
                    "Targets of those runs still waiting (for the cap, a machine woken by "
                    "Wake-on-LAN, or their wake-up), at the last round.",
                    single(counts.queued))
        text.family("epns_server_campaign_runs_total", "counter",
                    "Campaign runs ended, by outcome: done, missed (the server was down, "
                    "or the previous run was still under way).",
                    labelled("outcome", Counter({"done": 0, "missed": 0, **counts.runs})))
        text.family("epns_server_campaign_sends_total", "counter",
                    "Sends campaigns made under the cap, by kind: wake (one agent), wol "
                    "(one machine's Wake-on-LAN request).",
                    labelled("kind", Counter({"wake": 0, "wol": 0, **counts.sends})))

    def _render_wakes_and_syncs(self, text: Exposition) -> None:
        text.family("epns_server_wake_transitions_total", "counter",
                    "Wake targets this replica moved into a state (requested: accepted "
                    "by the API).", labelled("state", self.wake_transitions))
        text.histograms("epns_server_wake_latency_seconds",
                        "Seconds from the wake-up's API call until a target reached the "
                        "state (delivered: acked by the agent; satisfied: its sync done).",
                        ("state",), {(state,): histogram
                                     for state, histogram in self.wake_latency.items()})
        text.family("epns_server_syncs_total", "counter",
                    "Sync steps (report: POST, reply: GET) by outcome: ok or the refusal's "
                    "code.", labelled_by(("step", "outcome"), self.syncs))
        text.family("epns_server_sync_reports_total", "counter",
                    "Sync reports accepted, by the agent's reason.",
                    labelled("reason", self.sync_reasons))
        text.family("epns_server_sync_refusals_total", "counter",
                    "Sync steps refused, by HTTP status and code.",
                    labelled_by(("status", "code"), self.sync_refusals))
        text.histograms("epns_server_sync_duration_seconds",
                        "Seconds the server took to answer a sync step, refusals included.",
                        ("step",), {(step,): histogram
                                    for step, histogram in self.sync_seconds.items()})


def _render_fleet(text: Exposition, fleet: FleetGauges) -> None:
    """The database's gauges: the fleet's, the same on every replica."""
    text.family("epns_server_wake_targets", "gauge",
                "Wake targets in the database by state (fleet-wide: the same on every "
                "replica).", labelled("state", fleet.wake_targets))
    text.family("epns_server_agents", "gauge",
                "Live agents by presence: online, stale, offline, unknown (fleet-wide).",
                labelled("presence", fleet.agents))
    text.family("epns_server_outbox_pending", "gauge",
                "Signed commands staged in the outbox, not yet taken by the broker "
                "(fleet-wide).", single(fleet.outbox_pending))
    text.family("epns_server_outbox_oldest_age_seconds", "gauge",
                "Age of the oldest staged command; 0 when none is (fleet-wide).",
                single(fleet.outbox_oldest_age))
    text.family("epns_agent_identities_expiring", "gauge",
                "Live agents whose identity expires within the window "
                "(expired: already has).", labelled("within", fleet.expiring))
    text.family("epns_agent_identities_expiry_unknown", "gauge",
                "Live agents whose identity's expiry is not known yet "
                "(until their next sync or renewal).", single(fleet.expiry_unknown))
    text.family("epns_server_fleet_gauges_read_timestamp_seconds", "gauge",
                "When the database gauges above were read (they are cached a few seconds).",
                single(fleet.read_at))
