"""The Wake-on-LAN API (``/api/v1/wol``): a preflight that warns before
sending, the request itself, and the tracked outcome per target."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from epns.errors import BadRequest, TooManyRequests
from epns.topics import check_name
from epns.wol import MAX_ADDRESSES, MAX_PORTS
from server_push.fleet.wol import (
    MAX_TARGETS_PER_REQUEST,
    PreflightView,
    TargetSpec,
    WolAsk,
    WolView,
)
from server_push.web.api import CHANGE, NAME, Caller, Strict, Svc, refusals

router = APIRouter(prefix="/api/v1", tags=["wol"])


# --- schemas -----------------------------------------------------------------


class WolTargetIn(Strict):
    agent: str | None = Field(default=None, pattern=NAME,
                              description="agent id; its MAC and address come from its presence")
    mac: str | None = Field(default=None, max_length=32,
                            description="MAC address; wins over the agent's")
    address: str | None = Field(default=None, max_length=64,
                                description="last IPv4 address; give 'prefix' with it")
    prefix: int | None = Field(default=None, description="prefix length of its subnet, 8-32")


class WolCreate(Strict):
    agents: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        default=None, min_length=1, max_length=MAX_TARGETS_PER_REQUEST)
    targets: list[WolTargetIn] | None = Field(
        default=None, min_length=1, max_length=MAX_TARGETS_PER_REQUEST,
        description="machines named by MAC and address, with or without an agent")
    addresses: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=MAX_ADDRESSES,
        description="replaces where relays send (the subnet broadcast and last address)")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None, min_length=1, max_length=MAX_PORTS,
        description="replaces the ports on the settings page, for relays and the server")


class WolSendOut(BaseModel):
    by: str
    to: list[str]
    ports: list[int]
    command: str | None
    at: float
    result: dict[str, Any] | None


class WolRequestOut(BaseModel):
    id: str
    created_at: float
    requested_by: str
    agent_id: str | None
    mac: str
    address: str | None
    subnet: str | None
    state: str
    deadline: float
    woke_at: float | None
    relays: list[str]
    sends: list[WolSendOut]
    warning: str | None


class WolCreated(BaseModel):
    requests: list[WolRequestOut]


class PreflightOut(BaseModel):
    agent_id: str | None
    mac: str | None
    address: str | None
    subnet: str | None
    relays_online: int
    relays: list[str]
    warning: str | None
    packets: bool = Field(description=(
        "whether sending now would put out any magic packet for this target: its MAC is "
        "known and a relay is online in its subnet or the settings name server addresses"))


def _request_out(view: WolView) -> WolRequestOut:
    return WolRequestOut(
        id=view.id, created_at=view.created_at, requested_by=view.requested_by,
        agent_id=view.agent_id, mac=view.mac, address=view.address, subnet=view.subnet,
        state=view.state, deadline=view.deadline, woke_at=view.woke_at, relays=view.relays,
        sends=[WolSendOut.model_validate(send) for send in view.sends], warning=view.warning)


def _preflight_out(view: PreflightView) -> PreflightOut:
    return PreflightOut(agent_id=view.agent_id, mac=view.mac, address=view.address,
                        subnet=view.subnet, relays_online=view.relays_online,
                        relays=view.relays, warning=view.warning, packets=view.packets)


# Each list at most 4 KB of query: the HTTP server refuses longer request
# lines outright (h11's 16 KB limit) with a bare 400 that is not our error body.
QUERY_ITEM, QUERY_ITEMS = 512, 8


def _listed(values: list[str] | None) -> list[str]:
    """Items of a repeated, comma-separated parameter: a=x,y&a=z is x, y, z."""
    return [item.strip() for text in values or () for item in text.split(",") if item.strip()]


def _preflight_specs(agents: list[str] | None, targets: list[str] | None) -> list[TargetSpec]:
    """Targets from the query: agent ids, and addresses as ``address/prefix``."""
    specs = [TargetSpec(agent=check_name(name, "agent id")) for name in _listed(agents)]
    for text in _listed(targets):
        address, slash, prefix = text.partition("/")
        if not slash or not prefix.isdigit():
            raise BadRequest(f"target {text!r} is not address/prefix, e.g. 192.0.2.23/24",
                             code="invalid_target")
        specs.append(TargetSpec(address=address, prefix=int(prefix)))
    if not specs:
        raise BadRequest("name at least one agent or target", code="no_targets")
    if len(specs) > MAX_TARGETS_PER_REQUEST:
        raise BadRequest(f"at most {MAX_TARGETS_PER_REQUEST} targets per request",
                         code="too_many_targets")
    return specs


# --- routes ------------------------------------------------------------------


@router.get("/wol/preflight", response_model=list[PreflightOut],
            summary="Before sending: each target's subnet, its relays online, and a warning "
                    "when none is", responses=refusals(400, 404, 409, 422))
async def wol_preflight(
    services: Svc, _: Caller,
    agents: Annotated[list[Annotated[str, Field(max_length=QUERY_ITEM)]] | None, Query(
        max_length=QUERY_ITEMS,
        description="agent ids: repeated (agents=a&agents=b), comma-separated, or both")] = None,
    targets: Annotated[list[Annotated[str, Field(max_length=QUERY_ITEM)]] | None, Query(
        max_length=QUERY_ITEMS,
        description="address/prefix: repeated, comma-separated, or both")] = None,
) -> list[PreflightOut]:
    views = await services.wol.preflight(_preflight_specs(agents, targets))
    return [_preflight_out(view) for view in views]


class SubnetOut(BaseModel):
    subnet: str
    agents: int = Field(description="agents in service that report an interface in it")
    online: int = Field(description="of them online now: the relays it has")
    eligible: int = Field(description="online and allowing keep-awake (wol.allow_keep_awake)")
    keeper: str | None = Field(description="the agent elected to hold off sleep for it "
                                           "(keep-awake on)")
    keeper_holding: bool | None = Field(description="what the keeper last reported: holding "
                                                    "sleep off (null: no report yet)")
    keeper_detail: str = Field(description="why the keeper does not hold, in its words")
    warning: str | None = Field(description="no relay, no eligible agent, or a keeper that "
                                            "cannot hold")


class SubnetsOut(BaseModel):
    keep_awake: bool = Field(description="the wol setting: one agent kept awake per subnet")
    subnets: list[SubnetOut]


@router.get("/wol/subnets", response_model=SubnetsOut,
            summary="The subnets agents report, their relays online, and the agent kept "
                    "awake in each", responses=refusals(422))
async def wol_subnets(services: Svc, _: Caller) -> SubnetsOut:
    enabled, views = await services.keep_awake.subnets(time.time())
    return SubnetsOut(keep_awake=enabled, subnets=[SubnetOut(
        subnet=v.subnet, agents=v.agents, online=v.online, eligible=v.eligible, keeper=v.keeper,
        keeper_holding=v.keeper_holding, keeper_detail=v.keeper_detail, warning=v.warning)
        for v in views])


@router.post("/wol", status_code=202, response_model=WolCreated,
             summary="Wake machines through relays on their subnet and the server's own "
                     "addresses; tracked to woke or not_woken",
             responses=refusals(*CHANGE, 404, 409, 429))
async def create_wol(body: WolCreate, services: Svc, caller: Caller) -> WolCreated:
    specs = [TargetSpec(agent=agent) for agent in body.agents or ()]
    specs += [TargetSpec(agent=t.agent, mac=t.mac, address=t.address, prefix=t.prefix)
              for t in body.targets or ()]
    if not specs:
        raise BadRequest("give 'agents' and/or 'targets'", code="no_targets")
    # One budget with wake-ups: both make the server command agents.
    wait = services.wake_limiter.take(caller.actor, time.time())
    if wait > 0:
        raise TooManyRequests(f"too many requests from {caller.actor}; retry in {wait:.0f} s",
                              retry_after=wait)
    views = await services.wol.request(caller.actor, WolAsk(
        tuple(specs), tuple(body.addresses or ()), tuple(body.ports or ())))
    return WolCreated(requests=[_request_out(view) for view in views])


@router.get("/wol", response_model=list[WolRequestOut],
            summary="Recent Wake-on-LAN requests, newest first", responses=refusals(422))
async def list_wol(services: Svc, _: Caller,
                   limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[WolRequestOut]:
    return [_request_out(view) for view in await services.wol.recent(limit)]


@router.get("/wol/{request_id}", response_model=WolRequestOut,
            summary="One Wake-on-LAN request: who sent what to where, and the outcome",
            responses=refusals(404, 422))
async def get_wol(request_id: Annotated[str, Path(max_length=64)], services: Svc,
                  _: Caller) -> WolRequestOut:
    return _request_out(await services.wol.get(request_id))
