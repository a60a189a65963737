"""The REST API (``/api/v1``): agents, wake-ups, tasks, settings, audit, tokens.

Integrations authenticate with a bearer token; the console's own calls ride
on the admin's session and must carry its CSRF token. Every refusal has one
body shape, ``{"error": {"status", "code", "message"}}``, see ``errors.py``;
each route declares the refusals it can answer, so the OpenAPI document tells
integrators (and schemathesis) the whole truth.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from epns import topics
from epns.envelope import Command, CommandType, target_agent
from epns.errors import BadRequest, Conflict, Forbidden, TooManyRequests, Unauthorized
from server_push.fleet.agent_query import SORT_FIELDS, AgentFilter, parse_sort
from server_push.fleet.wakeups import AgentMatch, WakeRequest, WakeupFilter, WakeupView
from server_push.security.auth import MAX_TOKEN_TTL, MIN_TOKEN_TTL, Principal
from server_push.services import Services
from server_push.store import audit_log as audit_log_query
from server_push.store.audit_log import AuditFilter
from server_push.store.history import audit
from server_push.web.errors import error_responses
from server_push.web.paging import page_headers, refuse_unknown

router = APIRouter(prefix="/api/v1")

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Wake-up and token ids are uuid4 hex: a control character or a 10 KB string
# cannot be one, and is refused before the database sees it.
ID = r"^[A-Za-z0-9_-]{1,64}$"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Free text that is stored: PostgreSQL text cannot hold a NUL character.
NO_NUL = r"^[^\x00]*$"
HEALTH_DB_TIMEOUT = 2.0


def get_services(request: Request) -> Services:
    """The services of this app."""
    services: Services = request.app.state.services
    return services


api_token = HTTPBearer(auto_error=False, scheme_name="apiToken",
                       description="An API token from 'epns-server token create' or the "
                                   "console; shown once, when it is created.")


async def principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(api_token)],
) -> Principal:
    """The caller: a bearer API token, or an admin's console session (whose
    unsafe requests must carry the session's CSRF token in X-CSRF-Token)."""
    services = get_services(request)
    if bearer is not None:
        return await services.credentials.check_token(bearer.credentials.strip())
    session = request.scope.get("session") or {}
    user = session.get("user")
    if isinstance(user, str):
        if request.method not in SAFE_METHODS and (
                not session.get("csrf") or request.headers.get("x-csrf-token") != session["csrf"]):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again",
                            code="csrf")
        return Principal("user", user)
    raise Unauthorized("authenticate with 'Authorization: Bearer <API token>' or log in "
                       "to the console", code="unauthorized")


Caller = Annotated[Principal, Depends(principal)]
Svc = Annotated[Services, Depends(get_services)]
AgentId = Annotated[str, Path(pattern=NAME, description="agent id")]


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of an authenticated route: 401, 503 (the database
    is unavailable) and ``statuses``. Routes that change something add 403 (a
    console session without its CSRF token) and 400 (a body that is no JSON)."""
    return error_responses(401, 503, *statuses)


CHANGE = (400, 403, 422)


# --- schemas -----------------------------------------------------------------


class Strict(BaseModel):
    """Request bodies refuse unknown fields: a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class AgentCreate(Strict):
    id: str = Field(pattern=NAME, description="agent id: the certificate CN and topic level")
    groups: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list,
                                                              max_length=32)
    auth: Literal["certificate", "token"] = "certificate"


class GroupsUpdate(Strict):
    groups: list[Annotated[str, Field(pattern=NAME)]] = Field(max_length=32)


class RevokeBody(Strict):
    reason: str = Field(default="revoked by an admin", max_length=500, pattern=NO_NUL)


class TaskCreate(Strict):
    type: Literal["inventory", "set_config", "renew"]
    body: dict[str, Any] = Field(default_factory=dict)


class WakeupCreate(Strict):
    agents: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        default=None, min_length=1, max_length=10_000)
    group: str | None = Field(default=None, pattern=NAME)
    all: bool = False
    filter: AgentMatchIn | None = Field(default=None, description=(
        "the agents GET /api/v1/agents lists with these filters, resolved when the "
        "request is accepted (revoked and retired agents left out); at most 10,000"))
    ttl: float | None = Field(default=None, ge=1, description="seconds; default from config")


class TokenCreate(Strict):
    """A new API token's properties (more to come: scopes)."""

    name: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    ttl: float | None = Field(default=None, ge=MIN_TOKEN_TTL, le=MAX_TOKEN_TTL, description=(
        "seconds until the token expires (60 s to 10 years); absent or null: it works "
        "until revoked"))


class Bundle(BaseModel):
    agent_id: str
    auth: str
    files: dict[str, str]


class WakeupOut(BaseModel):
    id: str
    created_at: float
    expires_at: float
    requested_by: str
    target_kind: str
    target: list[Any]
    counts: dict[str, int] = Field(description=(
        "targets per state: requested, delivered, satisfied, expired, cancelled"))
    done: bool
    cancelled_at: float | None = Field(default=None, description="when an admin cancelled it")
    cancelled_by: str | None = None
    targets: list[dict[str, Any]] = Field(default_factory=list, description=(
        "per agent: state, its times, and its agent's presence when requested "
        "(presence_at_request) and now (presence, agent_online, last_seen)"))


def _wakeup_out(view: WakeupView) -> WakeupOut:
    return WakeupOut(id=view.id, created_at=view.created_at, expires_at=view.expires_at,
                     requested_by=view.requested_by, target_kind=view.target_kind,
                     target=view.target, counts=view.counts, done=view.done,
                     cancelled_at=view.cancelled_at, cancelled_by=view.cancelled_by,
                     targets=[{"agent_id": t.agent_id, "state": t.state,
                               "requested_at": t.requested_at, "delivered_at": t.delivered_at,
                               "satisfied_at": t.satisfied_at, "ended_at": t.ended_at,
                               "presence_at_request": t.presence_at_request,
                               "presence": t.presence, "agent_online": t.presence == "online",
                               "last_seen": t.last_seen}
                              for t in view.targets])


# --- health ------------------------------------------------------------------


@router.get("/health", tags=["meta"],
            summary="Liveness, the broker link, the database, and the server's clock")
async def health(services: Svc) -> dict[str, Any]:
    database = await _database_answers(services)
    broker = services.broker_up()
    link = services.link.health
    # The clock lets epns-check measure an agent's skew: commands tolerate 60 s.
    answer: dict[str, Any] = {"status": "ok" if database else "degraded", "broker": broker,
                              "database": database, "role": services.role, "time": time.time()}
    if not broker and link.reason is not None:
        # Why push is stopped, for the operator reading health: the link's
        # last error, and since when.
        answer["broker_error"] = link.reason
        answer["broker_down_since"] = link.down_since
    return answer


@router.get("/metrics", tags=["meta"], response_class=Response,
            summary="The server's metrics, Prometheus text format",
            responses={200: {"description": "Prometheus text exposition 0.0.4",
                             "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **refusals()})
async def metrics(services: Svc, _: Caller) -> Response:
    """This replica's counters and histograms (wake-ups, syncs, HTTP, the
    outbox, the broker link), and the fleet's gauges from the database, read
    at most every few seconds (docs/metrics.md)."""
    fleet = await services.gauges.read(time.time())
    return Response(services.metrics.render(fleet),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


async def _database_answers(services: Services) -> bool:
    """A cheap round trip to the database, bounded so health never hangs."""
    try:
        async with asyncio.timeout(HEALTH_DB_TIMEOUT), services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return False
    return True


# --- agents ------------------------------------------------------------------


Presence = Literal["online", "stale", "offline", "unknown"]
Names = list[Annotated[str, Field(pattern=NAME)]]
# Values of one repeated filter: "any of" sixteen is plenty, and bounds the
# request line (the HTTP server refuses one over 16 KB with a bare 400).
MAX_VALUES = 16
Texts64 = list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]]
Texts128 = list[Annotated[str, Field(max_length=128, pattern=NO_NUL)]]
Limit = Annotated[int | None, Query(ge=1, le=1000, description=(
    "page size, 1 to 1000; without it, every matching row (as before paging). The "
    "total matching is in X-Total-Count, the neighbouring pages in Link"))]
Offset = Annotated[int, Query(ge=0, le=10**9, description="rows to skip: (page - 1) * limit")]
_PAGE_HEADERS = {
    "X-Total-Count": {"description": "rows matching the filters", "schema": {"type": "integer"}},
    "Link": {"description": "first, prev, next, last pages (RFC 8288)",
             "schema": {"type": "string"}}}


class AgentQueryParams(BaseModel):
    """The filters of the agents' list and of the fleet summary."""

    q: str | None
    presence: list[Presence] | None
    group: list[str] | None
    route: list[str] | None
    version: list[str] | None
    last_seen_before: float | None
    last_seen_after: float | None
    expiring_within: float | None
    retired: Literal["exclude", "include", "only"]

    def to_filter(self) -> AgentFilter:
        """The registry's filter."""
        return AgentFilter(q=self.q, presence=tuple(self.presence or ()),
                           groups=tuple(self.group or ()), routes=tuple(self.route or ()),
                           versions=tuple(self.version or ()),
                           last_seen_before=self.last_seen_before,
                           last_seen_after=self.last_seen_after,
                           expiring_within=self.expiring_within, retired=self.retired)


def agent_filters(
    *, q: Annotated[str | None, Query(max_length=100, pattern=NO_NUL, description=(
        "text: a case-insensitive substring of the id or the host name"))] = None,
    presence: Annotated[list[Presence] | None, Query(max_length=MAX_VALUES, description=(
        "shown presence; repeat for any of several (presence=online&presence=stale)"))] = None,
    group: Annotated[Names | None, Query(max_length=MAX_VALUES, description=(
        "member of this group; repeat for any of several"))] = None,
    route: Annotated[Texts64 | None, Query(max_length=MAX_VALUES, description=(
        "the route of its last birth (e.g. mqtt, ws); repeat for any of several"))] = None,
    version: Annotated[Texts64 | None, Query(max_length=MAX_VALUES, description=(
        "agent version as its birth said; repeat for any of several"))] = None,
    last_seen_before: Annotated[float | None, Query(ge=0, le=1e11, description=(
        "UNIX seconds: last heard from before this (never-seen agents do not match)"))] = None,
    last_seen_after: Annotated[float | None, Query(ge=0, le=1e11, description=(
        "UNIX seconds: last heard from at or after this"))] = None,
    expiring_within: Annotated[float | None, Query(
        ge=0, le=1e10, description="seconds: only agents whose identity expires within "
                                   "them (or has expired)")] = None,
    retired: Annotated[Literal["exclude", "include", "only"], Query(description=(
        "retired agents (DELETE /api/v1/agents/{id}): left out (exclude, the default), "
        "counted in (include), or alone (only)"))] = "exclude",
) -> AgentQueryParams:
    """The agents' filters, as query parameters."""
    return AgentQueryParams(q=q, presence=presence, group=group, route=route, version=version,
                            last_seen_before=last_seen_before, last_seen_after=last_seen_after,
                            expiring_within=expiring_within, retired=retired)


AgentFilters = Annotated[AgentQueryParams, Depends(agent_filters)]
_AGENT_FILTERS = tuple(AgentQueryParams.model_fields)


@router.get("/agents", tags=["agents"], summary="Agents: filtered, sorted, one page at a time",
            description="A JSON list of agents. X-Total-Count is the number matching the "
                        "filters; Link has the first, prev, next and last pages when `limit` "
                        "is given. Unknown parameters or sort fields answer 422. Totals by "
                        "presence: GET /api/v1/fleet/summary with the same filters.",
            responses={200: {"headers": _PAGE_HEADERS}, **refusals(422)})
async def list_agents(
    *, request: Request, response: Response, services: Svc, _: Caller, filters: AgentFilters,
    sort: Annotated[str, Query(max_length=200, description=(
        "comma-separated fields among " + ", ".join(SORT_FIELDS) + "; '-' before one for "
        "descending (-last_seen). Ties are broken by id; missing values come last. "
        "presence sorts online, stale, offline, unknown; group by the group list's text"))
                    ] = "id",
    limit: Limit = None, offset: Offset = 0,
) -> list[dict[str, Any]]:
    refuse_unknown(request, (*_AGENT_FILTERS, "sort", "limit", "offset"))
    keys = parse_sort(sort)
    now = time.time()
    wanted = filters.to_filter()
    views = await services.registry.find(wanted, keys, now, limit=limit, offset=offset)
    if limit is None and offset == 0:
        total = len(views)
    else:
        total = (await services.registry.count(wanted, now))["total"]
    page_headers(request, response, total, limit, offset)
    return [v.to_dict() for v in views]


@router.get("/fleet/summary", tags=["agents"],
            summary="Agent totals by presence: for the filters given, and for the whole fleet",
            description='`{"total": n, "presence": {"online": n, "stale": n, "offline": n, '
                        '"unknown": n}, "fleet": {the same for every agent}}`; takes the '
                        "filters of GET /api/v1/agents.", responses=refusals(422))
async def fleet_summary(request: Request, services: Svc, _: Caller,
                        filters: AgentFilters) -> dict[str, Any]:
    refuse_unknown(request, _AGENT_FILTERS)
    now = time.time()
    wanted = filters.to_filter()
    matching = await services.registry.count(wanted, now)
    # Unfiltered (the console's first view), the fleet is the same count:
    # one scan of the agents, not two.
    fleet = matching if wanted == AgentFilter() else await services.registry.count(
        AgentFilter(), now)
    return {**matching, "fleet": fleet}


@router.get("/groups", tags=["agents"],
            summary="Group names in use, with how many agents (not retired) are in each",
            description='`{"name": members, ...}` by name.', responses=refusals())
async def list_groups(services: Svc, _: Caller) -> dict[str, int]:
    return await services.registry.groups()


@router.post("/agents", tags=["agents"], status_code=201, response_model=Bundle,
             summary="Create an agent and its identity; returns its config bundle",
             responses=refusals(*CHANGE, 409))
async def create_agent(body: AgentCreate, services: Svc, caller: Caller) -> Bundle:
    bundle = await services.agents.create(body.id, body.groups, body.auth, caller.actor)
    return Bundle(agent_id=bundle.agent_id, auth=bundle.auth, files=bundle.files)


@router.get("/agents/{agent_id}", tags=["agents"], summary="One agent",
            responses=refusals(404, 422))
async def get_agent(agent_id: AgentId, services: Svc,
                    _: Caller) -> dict[str, Any]:
    return (await services.registry.get(agent_id, time.time())).to_dict()


@router.get("/agents/{agent_id}/history", tags=["agents"], summary="An agent's history",
            responses=refusals(404, 422))
async def agent_history(agent_id: AgentId, services: Svc, _: Caller,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100
                        ) -> list[dict[str, Any]]:
    await services.registry.get(agent_id, time.time())
    return await services.registry.history(agent_id, limit)


@router.put("/agents/{agent_id}/groups", tags=["agents"], summary="Replace an agent's groups",
            responses=refusals(*CHANGE, 404, 409))
async def set_groups(agent_id: AgentId, body: GroupsUpdate, services: Svc,
                     caller: Caller) -> dict[str, Any]:
    return {"groups": await services.agents.set_groups(agent_id, body.groups, caller.actor)}


@router.post("/agents/{agent_id}/revoke", tags=["agents"], status_code=204,
             summary="Revoke an agent: its connection is closed and refused",
             responses=refusals(*CHANGE, 404, 409))
async def revoke_agent(agent_id: AgentId, body: RevokeBody, services: Svc, caller: Caller
                       ) -> Response:
    await services.agents.revoke(agent_id, caller.actor, body.reason)
    return Response(status_code=204)


@router.delete("/agents/{agent_id}", tags=["agents"], status_code=204,
               summary="Retire an agent: revoked, its row and history kept (retired_at); "
                       "lists and totals leave it out unless retired=include",
               responses=refusals(403, 404, 409, 422))
async def retire_agent(agent_id: AgentId, services: Svc, caller: Caller) -> Response:
    await services.agents.retire(agent_id, caller.actor)
    return Response(status_code=204)


@router.post("/agents/{agent_id}/tasks", tags=["agents"], status_code=201,
             summary="Queue a task for the agent's next sync",
             responses=refusals(*CHANGE, 404))
async def create_task(agent_id: AgentId, body: TaskCreate, services: Svc,
                      caller: Caller) -> dict[str, Any]:
    return await services.tasks.create(agent_id, body.type, body.body, caller.actor)


@router.get("/agents/{agent_id}/tasks", tags=["agents"], summary="An agent's tasks",
            responses=refusals(404, 422))
async def list_tasks(agent_id: AgentId, services: Svc, _: Caller) -> list[dict[str, Any]]:
    await services.registry.get(agent_id, time.time())
    return await services.tasks.for_agent(agent_id)


# --- wake-ups ----------------------------------------------------------------


class AgentMatchIn(Strict):
    """The filters of GET /api/v1/agents as a JSON object; a list holds values
    any of which matches, and every field given must match."""

    q: str | None = Field(default=None, max_length=100, pattern=NO_NUL)
    presence: list[Presence] | None = Field(default=None, max_length=MAX_VALUES)
    group: Names | None = Field(default=None, max_length=MAX_VALUES)
    route: Texts64 | None = Field(default=None, max_length=MAX_VALUES)
    version: Texts64 | None = Field(default=None, max_length=MAX_VALUES)
    last_seen_before: float | None = Field(default=None, ge=0, le=1e11)
    last_seen_after: float | None = Field(default=None, ge=0, le=1e11)
    expiring_within: float | None = Field(default=None, ge=0, le=1e10)

    def to_match(self) -> AgentMatch:
        """The registry's filter, and the filter as written (the wake-up's target)."""
        return AgentMatch(AgentFilter(
            q=self.q, presence=tuple(self.presence or ()), groups=tuple(self.group or ()),
            routes=tuple(self.route or ()), versions=tuple(self.version or ()),
            last_seen_before=self.last_seen_before, last_seen_after=self.last_seen_after,
            expiring_within=self.expiring_within), self.model_dump(exclude_none=True))


@router.post("/wakeups", tags=["wakeups"], status_code=202, response_model=WakeupOut,
             summary="Wake agents, a group, all, or the agents a filter matches; tracked "
                     "to satisfied or expired",
             responses={200: {"model": WakeupOut,
                              "description": "the Idempotency-Key named an earlier request"},
                        **refusals(*CHANGE, 404, 409, 429)})
async def create_wakeup(
    body: WakeupCreate, services: Svc, caller: Caller, response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> WakeupOut:
    chosen = sum((body.agents is not None, body.group is not None, body.all,
                  body.filter is not None))
    if chosen != 1:
        raise BadRequest("give exactly one of 'agents', 'group', 'filter' or 'all': true",
                         code="bad_target")
    wait = services.wake_limiter.take(caller.actor, time.time())
    if wait > 0:
        raise TooManyRequests(f"too many wake-up requests from {caller.actor}; retry in "
                              f"{wait:.0f} s", retry_after=wait)
    kind: Literal["agents", "group", "all", "filter"] = (
        "agents" if body.agents is not None else "group" if body.group is not None
        else "filter" if body.filter is not None else "all")
    view, created = await services.wakeups.request(caller.actor, WakeRequest(
        kind=kind, agents=tuple(body.agents or ()), group=body.group, ttl=body.ttl,
        idempotency_key=idempotency_key,
        match=None if body.filter is None else body.filter.to_match()))
    if not created:
        response.status_code = 200
    return _wakeup_out(view)


@router.get("/wakeups", tags=["wakeups"], response_model=list[WakeupOut],
            summary="Wake-ups, newest first: filtered, one page at a time",
            description="X-Total-Count is the number matching the filters; Link has the "
                        "first, prev, next and last pages. Unknown parameters answer 422.",
            responses={200: {"headers": _PAGE_HEADERS}, **refusals(422)})
async def list_wakeups(
    *, request: Request, response: Response, services: Svc, _: Caller,
    requested_by: Annotated[Texts128 | None, Query(max_length=MAX_VALUES, description=(
        "the caller who asked (token:NAME, user name); repeat for any of several"))] = None,
    target_kind: Annotated[list[Literal["agents", "group", "all", "filter"]] | None, Query(
        max_length=MAX_VALUES,
        description="how the targets were named; repeat for any of several")] = None,
    created_after: Annotated[float | None, Query(
        ge=0, le=1e11, description="UNIX seconds: created at or after this")] = None,
    created_before: Annotated[float | None, Query(
        ge=0, le=1e11, description="UNIX seconds: created before this")] = None,
    sort: Annotated[Literal["created_at", "-created_at"], Query(
        description="creation time, '-' for newest first; ties by id")] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
    offset: Offset = 0,
) -> list[WakeupOut]:
    refuse_unknown(request, ("requested_by", "target_kind", "created_after", "created_before",
                             "sort", "limit", "offset"))
    wanted = WakeupFilter(tuple(requested_by or ()), tuple(target_kind or ()),
                          created_after, created_before)
    views, total = await services.wakeups.page(wanted, newest_first=sort.startswith("-"),
                                               limit=limit, offset=offset)
    page_headers(request, response, total, limit, offset)
    return [_wakeup_out(v) for v in views]


@router.get("/wakeups/{wakeup_id}", tags=["wakeups"], response_model=WakeupOut,
            summary="One wake-up with every target's state", responses=refusals(404, 422))
async def get_wakeup(wakeup_id: Annotated[str, Path(pattern=ID)], services: Svc,
                     _: Caller) -> WakeupOut:
    return _wakeup_out(await services.wakeups.get(wakeup_id, with_targets=True))


@router.post("/wakeups/{wakeup_id}/cancel", tags=["wakeups"], response_model=WakeupOut,
             summary="Cancel a wake-up: its pending targets end as cancelled",
             description="Targets still requested or delivered become cancelled (final); "
                         "satisfied and expired ones stay. Commands not yet published are "
                         "withdrawn; one the broker already holds for an offline agent may "
                         "still reach it, and counts for nothing. Idempotent: cancelling a "
                         "cancelled wake-up answers it unchanged. A POST, not a DELETE: the "
                         "wake-up and its record stay.",
             responses=refusals(*CHANGE, 404, 409))
async def cancel_wakeup(wakeup_id: Annotated[str, Path(pattern=ID)], services: Svc,
                        caller: Caller) -> WakeupOut:
    return _wakeup_out(await services.wakeups.cancel(caller.actor, wakeup_id))


# --- settings, audit, tokens -------------------------------------------------


@router.get("/settings/{section}", tags=["settings"], summary="One settings section",
            responses=refusals(422))
async def read_settings(section: Literal["wol", "hints", "notifications"], services: Svc,
                        _: Caller) -> dict[str, Any]:
    return await services.config.read(section)


@router.put("/settings/{section}", tags=["settings"], summary="Replace one settings section",
            responses=refusals(*CHANGE))
async def write_settings(section: Literal["wol", "hints", "notifications"],
                         body: dict[str, Any], services: Svc, _: Caller) -> dict[str, Any]:
    written = await services.config.write(section, body)
    if section == "wol":
        # keep_awake may have changed: elect now, not at the next recheck.
        services.keep_awake.poke()
    return written


AUDIT_DEFAULT_LIMIT = 100


@router.get("/audit", tags=["audit"], response_model=None,
            summary="The audit log: filtered, one page at a time, or CSV",
            description="JSON, or CSV with `format=csv` or `Accept: text/csv` (a header line; "
                        "targets as a JSON list; every matching entry unless `limit` is "
                        "given). X-Total-Count is the number matching the filters; Link has "
                        "the neighbouring pages. Unknown parameters answer 422.",
            responses={200: {"headers": _PAGE_HEADERS, "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "text/csv": {"schema": {"type": "string"}}}}, **refusals(422)})
async def audit_log(
    *, request: Request, response: Response, services: Svc, _: Caller,
    actor: Annotated[Texts128 | None, Query(max_length=MAX_VALUES, description=(
        "who did it (token:NAME, a user, cli); repeat for any of several"))] = None,
    action: Annotated[Texts64 | None, Query(max_length=MAX_VALUES, description=(
        "what was done (wakeup, revoke, ...); repeat for any of several"))] = None,
    target: Annotated[Names | None, Query(max_length=MAX_VALUES, description=(
        "an agent (or other id) among its targets; repeat for any of several"))] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11,
                                         description="UNIX seconds: at or after this")] = None,
    until: Annotated[float | None, Query(ge=0, le=1e11,
                                         description="UNIX seconds: before this")] = None,
    sort: Annotated[Literal["at", "-at"], Query(
        description="time, '-' for newest first; ties in order of writing")] = "-at",
    limit: Annotated[int | None, Query(ge=1, le=100_000, description=(
        f"page size; default {AUDIT_DEFAULT_LIMIT} for JSON, every entry for CSV"))] = None,
    offset: Offset = 0,
    format: Annotated[Literal["json", "csv"] | None, Query(
        description="csv for a CSV export (or Accept: text/csv)")] = None,
) -> Any:
    refuse_unknown(request, ("actor", "action", "target", "since", "until", "sort", "limit",
                             "offset", "format"))
    as_csv = format == "csv" or (format is None
                                 and "text/csv" in request.headers.get("accept", ""))
    size = limit if limit is not None or as_csv else AUDIT_DEFAULT_LIMIT
    wanted = AuditFilter(tuple(actor or ()), tuple(action or ()), tuple(target or ()),
                         since, until)
    async with services.sessions() as session:
        dialect = session.get_bind().dialect.name
        total = await session.scalar(audit_log_query.count_query(wanted, dialect)) or 0
        rows = (await session.scalars(audit_log_query.page_query(
            wanted, dialect, newest_first=sort == "-at", limit=size, offset=offset))).all()
    entries = [audit_log_query.as_dict(row) for row in rows]
    if as_csv:
        answer = Response(audit_log_query.as_csv(entries), media_type="text/csv; charset=utf-8",
                          headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
        page_headers(request, answer, total, size, offset)
        return answer
    page_headers(request, response, total, size, offset)
    return entries


@router.get("/audit/actions", tags=["audit"],
            summary="The actions the audit log holds (for the action filter), by name",
            responses=refusals())
async def audit_actions(services: Svc, _: Caller) -> list[str]:
    async with services.sessions() as session:
        return list((await session.scalars(audit_log_query.actions_query())).all())


@router.post("/tokens", tags=["tokens"], status_code=201,
             summary="Create an API token; the token is shown only in this answer",
             responses=refusals(*CHANGE))
async def create_token(body: TokenCreate, services: Svc, caller: Caller) -> dict[str, Any]:
    expires_at = None if body.ttl is None else time.time() + body.ttl
    token_id, token = await services.credentials.create_token(body.name, caller.actor,
                                                              expires_at=expires_at)
    return {"id": token_id, "name": body.name, "token": token, "expires_at": expires_at}


@router.get("/tokens", tags=["tokens"],
            summary="API tokens (without secrets): created, last used, expiry, state",
            responses=refusals())
async def list_tokens(services: Svc, _: Caller) -> list[dict[str, Any]]:
    return await services.credentials.tokens()


@router.delete("/tokens/{token_id}", tags=["tokens"], status_code=204,
               summary="Revoke an API token: refused from now on; it stays listed",
               responses=refusals(403, 404, 409, 422))
async def delete_token(token_id: Annotated[str, Path(pattern=ID)], services: Svc,
                       caller: Caller) -> Response:
    await services.credentials.revoke_token(token_id, caller.actor)
    return Response(status_code=204)


# --- an agent's pending wake-ups (the console's agent page) -------------------


@router.get("/agents/{agent_id}/wakeups", tags=["agents"],
            summary="An agent's wake-up targets still waiting for delivery or a sync",
            responses=refusals(404, 422))
async def agent_pending_wakeups(agent_id: AgentId, services: Svc,
                                _: Caller) -> list[dict[str, Any]]:
    await services.registry.get(agent_id, time.time())
    return [{"state": t.state, "requested_at": t.requested_at, "delivered_at": t.delivered_at}
            for t in await services.wakeups.pending_for(agent_id)]


# --- a test command for epns-check --------------------------------------------

PING_TTL = 60.0


@router.post("/agents/{agent_id}/ping", tags=["agents"],
             summary="Send the agent a signed test command (epns-check's end-to-end step)",
             responses=refusals(403, 404, 409, 422, 429))
async def ping_agent(agent_id: AgentId, services: Svc, caller: Caller) -> dict[str, Any]:
    """Stage a signed ``ping`` in the outbox and publish it; answers once the
    broker has taken it, with the command id the caller waits for."""
    now = time.time()
    wait = services.wake_limiter.take(caller.actor, now)
    if wait > 0:
        raise TooManyRequests(f"too many requests from {caller.actor}; retry in {wait:.0f} s",
                              retry_after=wait)
    if (await services.registry.get(agent_id, now)).revoked:
        raise Conflict(f"agent {agent_id!r} is revoked", code="agent_revoked")
    command = Command(CommandType.PING, target_agent(agent_id), now, now + PING_TTL)
    async with services.sessions() as session, session.begin():
        services.outbox.stage(session, command, topics.agent_cmd(agent_id))
        audit(session, at=now, actor=caller.actor, action="ping", targets=[agent_id],
              outcome="sent", ref=command.id)
    taken = await services.outbox.send([command.id])
    if command.id not in taken:
        # It stays in the outbox and goes out when the broker is back, unless expired.
        raise TooManyRequests("the server has no broker connection; retry shortly",
                              retry_after=5.0, status=503, code="broker_unavailable")
    return {"command_id": command.id, "sent_at": taken[command.id]}
