"""Enrolment over HTTPS: admins manage enrolment tokens (``/api/v1/enrol-tokens``)
and decide pending enrolments (``/api/v1/enrolments``); installers trade a
token for an identity (``POST /api/v1/enrol``, no admin credentials: the
token is the credential) and poll a pending one (``POST /api/v1/enrol/{id}``,
its secret is the credential). See ``server_push/fleet/enrol.py``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from epns.errors import NotFound
from epns.machine import FINGERPRINT
from epns.pki import MAX_CSR_BYTES
from server_push.fleet import installer
from server_push.fleet.agents import Bundle as AgentBundle
from server_push.fleet.agents import public_url
from server_push.fleet.enrol import (
    DEFAULT_TTL,
    MAX_TTL,
    MAX_USES,
    MIN_TTL,
    Machine,
    NewToken,
    Pending,
)
from server_push.services import Services
from server_push.web.api import CHANGE, ID, NAME, NO_NUL, Bundle, Caller, Strict, Svc, refusals
from server_push.web.body_limit import read_limited
from server_push.web.errors import error_responses

router = APIRouter(prefix="/api/v1", tags=["enrolment"])

# A CSR, a token and an id, with room for JSON escaping; nothing legitimate is larger.
MAX_ENROL_BODY = 2 * MAX_CSR_BYTES
MAX_POLL_BODY = 1024
EnrolmentId = Annotated[str, Path(pattern=ID, description="enrolment id")]


class EnrolTokenCreate(Strict):
    groups: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list,
                                                              max_length=32)
    ttl: float = Field(default=DEFAULT_TTL, ge=MIN_TTL, le=MAX_TTL,
                       description="seconds until the token expires")
    agent_id: str | None = Field(default=None, pattern=NAME,
                                 description="the one agent id the token may enrol")
    max_uses: int | None = Field(default=1, ge=1, le=MAX_USES,
                                 description="how many identities it may give; null: unlimited")
    approval: bool = Field(default=False,
                           description="each enrolment waits as pending until an admin "
                                       "accepts it")


class EnrolTokenOut(BaseModel):
    id: str
    token: str = Field(description="the secret: shown only in this answer")
    groups: list[str]
    agent_id: str | None
    expires_at: float
    max_uses: int | None
    approval: bool
    ca_fingerprint: str = Field(description="SHA-256 of the fleet CA as /install/ca.crt "
                                            "serves it")
    enrol_command: str = Field(description="epns-agent enrol, for a machine that has the "
                                           "agent and the CA")
    install_command: str | None = Field(description="the one-line installer (run as root); "
                                                    "null when [enrol] packages_dir is unset")


class EnrolRequest(Strict):
    token: str = Field(min_length=1, max_length=128)
    csr: str = Field(min_length=1, max_length=MAX_CSR_BYTES,
                     description="PEM certificate signing request; its subject is ignored")
    agent_id: str | None = Field(default=None, pattern=NAME,
                                 description="the id to enrol as; absent: one made of hostname")
    hostname: str | None = Field(default=None, min_length=1, max_length=255, pattern=NO_NUL,
                                 description="the machine's host name")
    machine: str | None = Field(default=None, pattern=FINGERPRINT,
                                description="SHA-256 fingerprint of the machine id")


class PollRequest(Strict):
    secret: str = Field(min_length=1, max_length=128)


class PendingOut(BaseModel):
    id: str
    state: Literal["pending"] = "pending"
    secret: str | None = Field(description="poll with it; only in the first answer")
    expires_at: float
    poll_after: float = Field(description="seconds to wait before asking again")
    poll: str = Field(description="POST {\"secret\": ...} here to ask again")


class EnrolmentOut(BaseModel):
    id: str
    token_id: str
    state: Literal["pending", "enrolled", "rejected", "expired"]
    created_at: float
    expires_at: float
    requested_id: str
    hostname: str | None
    machine: str | None
    address: str | None
    agent_id: str | None
    decided_at: float | None
    decided_by: str | None
    detail: str


class RejectBody(Strict):
    reason: str = Field(default="rejected by an admin", max_length=500, pattern=NO_NUL)


def _token_out(services: Services, made: NewToken) -> EnrolTokenOut:
    url = public_url(services.settings)
    fingerprint = installer.ca_fingerprint(services.settings)
    try:
        installer.offer(services.settings)
        command: str | None = installer.command(url, fingerprint, made.token)
    except NotFound:  # no installer offered
        command = None
    return EnrolTokenOut(
        id=made.id, token=made.token, groups=made.groups, agent_id=made.agent_id,
        expires_at=made.expires_at, max_uses=made.max_uses, approval=made.approval,
        ca_fingerprint=fingerprint,
        enrol_command=f"epns-agent enrol --server {url} --token {made.token} --ca ca.crt"
                      + (f" --id {made.agent_id}" if made.agent_id else ""),
        install_command=command)


def _pending(pending: Pending) -> JSONResponse:
    body = PendingOut(id=pending.id, secret=pending.secret, expires_at=pending.expires_at,
                      poll_after=pending.poll_after, poll=f"/api/v1/enrol/{pending.id}")
    return JSONResponse(body.model_dump(), status_code=202,
                        headers={"Retry-After": str(int(pending.poll_after))})


def _bundle(bundle: AgentBundle) -> Bundle:
    return Bundle(agent_id=bundle.agent_id, auth=bundle.auth, files=bundle.files)


@router.post("/enrol-tokens", status_code=201, response_model=EnrolTokenOut,
             summary="Create an enrolment token (uses, expiry, groups, approval); its secret "
                     "and install command are shown only in this answer",
             responses=refusals(*CHANGE))
async def create_enrol_token(body: EnrolTokenCreate, services: Svc,
                             caller: Caller) -> EnrolTokenOut:
    made = await services.enrolment().create_token(
        body.groups, body.ttl, body.agent_id, caller.actor, max_uses=body.max_uses,
        approval=body.approval)
    return _token_out(services, made)


@router.get("/enrol-tokens", summary="Enrolment tokens with their uses (without secrets)",
            responses=refusals())
async def list_enrol_tokens(services: Svc, _: Caller) -> list[dict[str, Any]]:
    return await services.enrolment().tokens()


@router.get("/enrol-tokens/{token_id}",
            summary="One enrolment token and its enrolments: which agents, when",
            responses=refusals(404, 422))
async def get_enrol_token(token_id: Annotated[str, Path(pattern=ID)], services: Svc,
                          _: Caller) -> dict[str, Any]:
    return await services.enrolment().token(token_id)


@router.delete("/enrol-tokens/{token_id}", status_code=204,
               summary="Revoke an enrolment token: no further uses; it stays listed",
               responses=refusals(403, 404, 409, 422))
async def revoke_enrol_token(token_id: Annotated[str, Path(pattern=ID)], services: Svc,
                             caller: Caller) -> Response:
    await services.enrolment().revoke(token_id, caller.actor)
    return Response(status_code=204)


@router.get("/enrolments", response_model=list[EnrolmentOut],
            summary="Enrolments, newest first: pending ones wait for an admin's decision",
            responses=refusals(422))
async def list_enrolments(
    services: Svc, _: Caller,
    state: Annotated[list[Literal["pending", "enrolled", "rejected", "expired"]] | None,
                     Query(description="in this state; repeat for any of several")] = None,
    token: Annotated[list[Annotated[str, Field(pattern=ID)]] | None, Query(
        max_length=16, description="of this enrolment token id; repeat for any of "
                                    "several")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return await services.enrolment().enrolments(state or (), token or (), limit)


@router.post("/enrolments/{enrolment_id}/accept", response_model=EnrolmentOut,
             summary="Accept a pending enrolment: the agent is created, the installer "
                     "fetches its certificate",
             responses=refusals(403, 404, 409, 422))
async def accept_enrolment(enrolment_id: EnrolmentId, services: Svc,
                           caller: Caller) -> dict[str, Any]:
    return await services.enrolment().accept(enrolment_id, caller.actor)


@router.post("/enrolments/{enrolment_id}/reject", response_model=EnrolmentOut,
             summary="Reject a pending enrolment; its use of the token is given back",
             responses=refusals(*CHANGE, 404, 409))
async def reject_enrolment(enrolment_id: EnrolmentId, services: Svc, caller: Caller,
                           body: RejectBody | None = None) -> dict[str, Any]:
    reason = (body or RejectBody()).reason
    return await services.enrolment().reject(enrolment_id, caller.actor, reason)


@router.post("/enrol", status_code=201, response_model=Bundle,
             summary="An installer trades an enrolment token and a CSR for its identity",
             description="No admin credentials: the token is the credential. The answer "
                         "is the agent's bundle without a private key (201), or, for a "
                         "token that needs approval, a pending enrolment to poll (202). "
                         "Without agent_id the server makes the id of hostname, unique "
                         "across machines (by the machine fingerprint).",
             responses={**error_responses(400, 401, 403, 409, 413, 422, 503),
                        202: {"model": PendingOut,
                              "description": "waiting for an admin's approval"}},
             openapi_extra={"requestBody": {
                 "required": True,
                 "content": {"application/json": {"schema": EnrolRequest.model_json_schema()}}}})
async def enrol(request: Request, services: Svc) -> Any:
    # Read with a limit before parsing: this route is open to anyone.
    raw = await read_limited(request, MAX_ENROL_BODY, "request")
    try:
        body = EnrolRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    found = Machine(body.hostname, body.machine, request.client.host if request.client else None)
    result = await services.enrolment().enrol(body.token, body.agent_id, body.csr, found)
    if isinstance(result, Pending):
        return _pending(result)
    return _bundle(result)


@router.post("/enrol/{enrolment_id}", status_code=201, response_model=Bundle,
             summary="An installer asks after its pending enrolment: still pending (202), "
                     "or its bundle once accepted",
             description="The poll secret from the 202 answer is the credential. "
                         "403 once rejected, 401 when expired.",
             responses={**error_responses(401, 403, 413, 422, 503),
                        202: {"model": PendingOut,
                              "description": "still waiting for an admin's approval"}},
             openapi_extra={"requestBody": {
                 "required": True,
                 "content": {"application/json": {"schema": PollRequest.model_json_schema()}}}})
async def poll_enrolment(enrolment_id: EnrolmentId, request: Request, services: Svc) -> Any:
    raw = await read_limited(request, MAX_POLL_BODY, "request")
    try:
        body = PollRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    result = await services.enrolment().poll(enrolment_id, body.secret)
    if isinstance(result, Pending):
        return _pending(result)
    return _bundle(result)
