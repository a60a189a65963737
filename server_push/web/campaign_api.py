"""The wake campaigns API (``/api/v1/campaigns``, ``/api/v1/campaign-runs``):
define, schedule, run by hand, and read each run's report (docs/campaigns.md).
Every change is audited by the service (``fleet/campaigns.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from epns.campaign_schedule import MAX_WINDOW, MIN_WINDOW, Schedule, parse_schedule
from epns.errors import BadRequest, MalformedMessage
from epns.wol import MAX_ADDRESSES, MAX_PORTS, parse_address
from server_push.fleet.campaigns import (
    MAX_NAMED_AGENTS,
    MAX_SETTLE,
    CampaignSpec,
    preview,
    report_csv,
)
from server_push.web.api import CHANGE, ID, NAME, NO_NUL, Caller, Strict, Svc, refusals
from server_push.web.paging import page_headers, refuse_unknown

router = APIRouter(prefix="/api/v1", tags=["campaigns"])

CampaignId = Annotated[str, Path(pattern=ID, description="campaign id")]
RunId = Annotated[str, Path(pattern=ID, description="campaign run id")]
Zone = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$",
                            description="IANA time zone: Europe/Paris, America/New_York, UTC")]
LocalAt = Annotated[str, Field(min_length=4, max_length=32, pattern=NO_NUL, description=(
    "local time HH:MM[:SS] (daily, weekly) or date and time YYYY-MM-DDTHH:MM[:SS] (once)"))]
Window = Annotated[float, Field(ge=MIN_WINDOW, le=MAX_WINDOW, allow_inf_nan=False, description=(
    "seconds from the slot until the run must be done: wake-ups expire by then"))]


class InvalidCampaign(BadRequest):
    """A campaign body whose fields are each well formed but cannot be used."""

    status = 422
    code = "invalid_campaign"


class ScheduleIn(Strict):
    kind: Literal["once", "daily", "weekly"]
    at: LocalAt
    timezone: Zone
    window: Window = 7200.0
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=list, max_length=7, description="weekly: 0 Monday .. 6 Sunday")


class TargetsIn(Strict):
    groups: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list,
                                                              max_length=32)
    agents: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list,
                                                              max_length=MAX_NAMED_AGENTS)


class OptionsIn(Strict):
    wol: bool = Field(default=False, description=(
        "Wake-on-LAN first for targets that are not online, through relays on their subnet"))
    settle: float = Field(default=120.0, ge=0, le=MAX_SETTLE, allow_inf_nan=False,
                          description="seconds to wait for a machine woken by Wake-on-LAN "
                                      "to come online before its wake-up is sent anyway")
    wol_addresses: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=MAX_ADDRESSES,
        description="replaces where relays send (the subnet broadcast and last address)")
    wol_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=MAX_PORTS,
        description="replaces the settings page's Wake-on-LAN ports")


class CampaignIn(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    targets: TargetsIn
    schedule: ScheduleIn
    options: OptionsIn = Field(default_factory=OptionsIn)
    enabled: bool = True


def _schedule(body: ScheduleIn) -> Schedule:
    return parse_schedule(body.kind, body.at, body.timezone, body.window, body.days)


def _spec(body: CampaignIn) -> CampaignSpec:
    options = body.options
    try:
        addresses = tuple(dict.fromkeys(parse_address(a) for a in options.wol_addresses))
    except MalformedMessage as exc:
        raise InvalidCampaign(f"options.wol_addresses: {exc}") from None
    if not body.targets.groups and not body.targets.agents:
        raise InvalidCampaign("targets: name at least one group or agent", code="no_targets")
    return CampaignSpec(name=body.name, schedule=_schedule(body.schedule),
                        groups=tuple(dict.fromkeys(body.targets.groups)),
                        agents=tuple(dict.fromkeys(body.targets.agents)),
                        enabled=body.enabled, wol=options.wol, settle=options.settle,
                        wol_addresses=addresses, wol_ports=tuple(options.wol_ports))


# --- routes: the fixed paths first, or {campaign_id} would take them --------


@router.get("/campaigns/preview", summary="A schedule's words and its next runs, or a 422 "
            "that says which field is wrong", responses=refusals(422))
async def schedule_preview(
    *, services: Svc, _: Caller,
    kind: Annotated[Literal["once", "daily", "weekly"], Query()],
    at: Annotated[str, Query(min_length=4, max_length=32, pattern=NO_NUL)],
    timezone: Annotated[str, Query(min_length=1, max_length=64,
                                   pattern=r"^[A-Za-z0-9_+/-]+$")],
    window: Annotated[float, Query(ge=MIN_WINDOW, le=MAX_WINDOW, allow_inf_nan=False)] = 7200.0,
    days: Annotated[list[Annotated[int, Field(ge=0, le=6)]] | None,
                    Query(max_length=7)] = None,
) -> dict[str, Any]:
    schedule = parse_schedule(kind, at, timezone, window, days or ())
    return preview(schedule, services.campaigns.clock.now())


@router.get("/campaigns/pacing", summary="The server-wide cap on wake-ups and magic packets: "
            "used in the current interval, campaign targets queued, and when they will have "
            "gone", responses=refusals())
async def pacing(services: Svc, _: Caller) -> dict[str, Any]:
    return (await services.campaigns.pacing()).as_dict()


@router.get("/campaigns", summary="Campaigns, by name", responses=refusals(422))
async def list_campaigns(
    services: Svc, _: Caller,
    deleted: Annotated[bool, Query(description="include deleted campaigns")] = False,
) -> list[dict[str, Any]]:
    return await services.campaigns.all(include_deleted=deleted)


@router.post("/campaigns", status_code=201, summary="Create a campaign",
             responses=refusals(*CHANGE))
async def create_campaign(body: CampaignIn, services: Svc, caller: Caller) -> dict[str, Any]:
    return await services.campaigns.create(caller.actor, _spec(body))


@router.get("/campaigns/{campaign_id}", summary="One campaign, its next runs and latest run",
            responses=refusals(404, 422))
async def get_campaign(campaign_id: CampaignId, services: Svc, _: Caller) -> dict[str, Any]:
    return await services.campaigns.get(campaign_id)


@router.put("/campaigns/{campaign_id}", summary="Replace a campaign (enabled: false pauses it)",
            responses=refusals(*CHANGE, 404))
async def update_campaign(campaign_id: CampaignId, body: CampaignIn, services: Svc,
                          caller: Caller) -> dict[str, Any]:
    return await services.campaigns.update(campaign_id, caller.actor, _spec(body))


@router.delete("/campaigns/{campaign_id}", status_code=204,
               summary="Delete a campaign: no more runs; its runs and reports are kept",
               responses=refusals(403, 404, 422))
async def delete_campaign(campaign_id: CampaignId, services: Svc, caller: Caller) -> Response:
    await services.campaigns.delete(campaign_id, caller.actor)
    return Response(status_code=204)


@router.post("/campaigns/{campaign_id}/run", status_code=202,
             summary="Run a campaign now, with its schedule's window",
             responses=refusals(403, 404, 409, 422))
async def run_campaign(campaign_id: CampaignId, services: Svc, caller: Caller
                       ) -> dict[str, Any]:
    return await services.campaigns.run_now(campaign_id, caller.actor)


@router.get("/campaigns/{campaign_id}/runs", summary="A campaign's runs, newest first",
            responses=refusals(404, 422))
async def campaign_runs(
    *, request: Request, response: Response, campaign_id: CampaignId, services: Svc,
    _: Caller, limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    refuse_unknown(request, ("limit", "offset"))
    runs, total = await services.campaigns.runs(campaign_id, limit=limit, offset=offset)
    page_headers(request, response, total, limit, offset)
    return runs


@router.get("/campaign-runs/{run_id}", response_model=None,
            summary="A run's report: counts, the cap while it runs, and every target",
            description="JSON (``limit`` targets from ``offset``, by agent id), or every "
                        "target as CSV with `format=csv`.",
            responses={200: {"content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}}}}, **refusals(404, 422)})
async def campaign_run(
    run_id: RunId, services: Svc, _: Caller,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=10_000, description=(
        "JSON: targets in the answer, by agent id (counts are always the whole run's; "
        "the CSV has every target)"))] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Any:
    if format == "json":
        return await services.campaigns.report(run_id, limit=limit, offset=offset)
    report = await services.campaigns.report(run_id)
    return Response(report_csv(report["targets"]), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="campaign-run-{run_id}.csv"'})
