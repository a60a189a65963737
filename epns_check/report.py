"""The report of one check, sans-IO: step results, the verdict and the exit code.

Every probe ends in a ``Finding`` (status, what was seen, what to change);
the runner stamps it with its step, subject and duration into a ``Result``.
``decide`` turns the results into the verdict a support person acts on::

    0  push works on the agent's primary route
    1  push works only on a fallback route, or with warnings
    2  push does not work
    3  a usage or configuration error: the agent could not even start
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_BROKEN = 2
EXIT_CONFIG = 3


class Status(StrEnum):
    """How one step went."""

    PASS = "PASS"  # noqa: S105 - a status, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


class Step(StrEnum):
    """The steps, in the order they are reported."""

    CONFIG = "config"
    DNS = "dns"
    TCP = "tcp"
    PROXY = "proxy"
    TLS = "tls"
    MQTT = "mqtt"
    ACL = "acl"
    E2E = "e2e"
    SYNC = "sync"
    CLOCK = "clock"
    # epns-check --server
    LISTENER = "listener"
    CERTIFICATE = "certificate"
    METRICS = "metrics"
    HEALTH = "health"

    @property
    def number(self) -> int:
        """The step's place in the report, from 1."""
        return list(Step).index(self) + 1


# Steps that belong to one route: a route works when they all pass on it.
ROUTE_STEPS = frozenset({Step.TCP, Step.PROXY, Step.TLS, Step.MQTT, Step.ACL})
# Steps that test push as a whole: a failure breaks push whatever the route.
WHOLE_STEPS = frozenset({Step.E2E, Step.SYNC, Step.CLOCK})
# Steps whose outcome is the same on every route (TLS verified end to end
# carries the bytes inside unchanged), so they run on one route only.
IDENTITY_STEPS = frozenset({Step.MQTT, Step.ACL})


@dataclass(frozen=True, slots=True)
class Finding:
    """What a probe saw: a status, the observation, and the change to make."""

    status: Status
    detail: str
    hint: str = ""


def passed(detail: str) -> Finding:
    """A PASS finding."""
    return Finding(Status.PASS, detail)


def skipped(detail: str) -> Finding:
    """A SKIP finding: the step could not run, and why."""
    return Finding(Status.SKIP, detail)


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the report. ``route`` names the route the line belongs to."""

    step: Step
    subject: str
    finding: Finding
    seconds: float = 0.0
    route: str | None = None

    @property
    def status(self) -> Status:
        """The finding's status."""
        return self.finding.status

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this line."""
        return {"step": self.step.value, "number": self.step.number, "subject": self.subject,
                "route": self.route, "status": self.status.value,
                "seconds": round(self.seconds, 3), "detail": self.finding.detail,
                "hint": self.finding.hint}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer: the route push uses (if any), the exit code and one sentence."""

    exit_code: int
    summary: str
    route: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one run of epns-check found."""

    title: str
    results: tuple[Result, ...]
    verdict: Verdict
    notes: tuple[str, ...] = field(default_factory=tuple)

    def ordered(self) -> list[Result]:
        """The results in step order; within a step, in the order they ran."""
        return sorted(self.results, key=lambda r: r.step.number)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the report, for a ticket."""
        return {"title": self.title, "notes": list(self.notes),
                "steps": [r.to_dict() for r in self.ordered()],
                "verdict": {"exit_code": self.verdict.exit_code, "route": self.verdict.route,
                            "summary": self.verdict.summary}}


def working_routes(results: Sequence[Result], routes: Sequence[str], *,
                   mqtt_tested: bool = True) -> list[str]:
    """The routes, in order, on which push works: every route step that ran on
    them passed or warned, TLS among them, and the identity steps passed on the
    route where they ran (unless MQTT was not tried: --no-takeover)."""
    identity = [r for r in results if r.step in IDENTITY_STEPS and r.status is not Status.SKIP]
    if mqtt_tested and (not identity or any(r.status not in (Status.PASS, Status.WARN)
                                            for r in identity)):
        return []
    working = []
    for route in routes:
        own = [r for r in results if r.route == route and r.step in ROUTE_STEPS]
        if any(r.step is Step.TLS and r.status in (Status.PASS, Status.WARN) for r in own) and \
                all(r.status in (Status.PASS, Status.WARN) for r in own):
            working.append(route)
    return working


def decide(results: Sequence[Result], routes: Sequence[str], *, last_good: str | None = None,
           mqtt_tested: bool = True) -> Verdict:
    """The verdict of an agent check. ``routes`` is the agent's order (its
    first is the primary route); ``last_good`` is tried first by the agent;
    without ``mqtt_tested`` (--no-takeover) a route works when TLS does, and
    the verdict says that MQTT was not tried."""
    verdict = _decide(results, routes, last_good, mqtt_tested)
    if mqtt_tested or verdict.route is None:
        return verdict
    return Verdict(verdict.exit_code, verdict.summary.replace("push works", "the broker is "
                   "reachable") + " (TLS verified; MQTT not tried: --no-takeover)", verdict.route)


def _decide(results: Sequence[Result], routes: Sequence[str], last_good: str | None,
            mqtt_tested: bool) -> Verdict:
    if _failed(results, {Step.CONFIG}):
        return Verdict(EXIT_CONFIG, "the agent's configuration is unusable: fix the FAIL "
                                    "lines of step 1 first")
    working = working_routes(results, routes, mqtt_tested=mqtt_tested)
    if not working:
        first = _deepest_failure(results)
        why = f": {first.finding.detail}" if first else ""
        return Verdict(EXIT_BROKEN, f"push does not work: no route reaches the broker{why}")
    chosen = last_good if last_good in working else working[0]
    broken = [r for r in results if r.step in WHOLE_STEPS and r.status is Status.FAIL]
    if broken:
        return Verdict(EXIT_BROKEN, f"the agent reaches the broker on {chosen}, but "
                                    f"{broken[0].step.value} fails: {broken[0].finding.detail}",
                       chosen)
    if working[0] != routes[0]:
        return Verdict(EXIT_DEGRADED, f"push works only on a fallback route: the agent will "
                                      f"use {chosen}; its primary route {routes[0]} fails",
                       chosen)
    works = f"push works on the primary route {routes[0]}"
    if chosen != routes[0]:
        works += f" (the agent tries {chosen} first: it worked last)"
    if any(r.status is Status.WARN for r in _relevant(results, chosen)):
        return Verdict(EXIT_DEGRADED, f"{works}, with warnings", chosen)
    return Verdict(EXIT_OK, works, chosen)


def decide_server(results: Sequence[Result]) -> Verdict:
    """The verdict of ``epns-check --server``: any FAIL is 2, any WARN 1."""
    if _failed(results, {Step.CONFIG}):
        return Verdict(EXIT_CONFIG, "the server's configuration is unusable")
    first = _first_failure(results)
    if first is not None:
        return Verdict(EXIT_BROKEN, f"the server side is broken: {first.finding.detail}")
    if any(r.status is Status.WARN for r in results):
        return Verdict(EXIT_DEGRADED, "the server side works, with warnings")
    return Verdict(EXIT_OK, "the server side works")


def _failed(results: Iterable[Result], steps: set[Step]) -> bool:
    return any(r.step in steps and r.status is Status.FAIL for r in results)


def _first_failure(results: Sequence[Result]) -> Result | None:
    failures = [r for r in results if r.status is Status.FAIL]
    return min(failures, key=lambda r: r.step.number) if failures else None


def _deepest_failure(results: Sequence[Result]) -> Result | None:
    """When no route works, the failure that got furthest along its route is
    the first real cause: a firewall that drops 8883 is expected where a
    proxy is the way out, and the interception the proxy route met is what
    to change. A failure before the routes (DNS) comes first; one after them
    (the sync through the same interceptor) is a consequence, named last."""
    failures = [r for r in results if r.status is Status.FAIL]
    before = [r for r in failures if r.step.number < Step.TCP.number]
    if before:
        return min(before, key=lambda r: r.step.number)
    on_routes = [r for r in failures if r.step in ROUTE_STEPS]
    if on_routes:
        return max(on_routes, key=lambda r: r.step.number)
    return min(failures, key=lambda r: r.step.number, default=None)


def _relevant(results: Sequence[Result], chosen: str) -> list[Result]:
    """Lines that concern push on ``chosen``: its own and the global ones (a
    warning on a route the agent does not use is not a warning about push)."""
    return [r for r in results
            if r.step not in ROUTE_STEPS or r.step in IDENTITY_STEPS or r.route == chosen]
