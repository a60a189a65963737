"""Enrolment over HTTPS: admins manage one-time tokens (``/api/v1/enrol-tokens``),
installers trade one for an identity (``POST /api/v1/enrol``, no admin
credentials: the token is the credential). See ``enrol.py``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError

from epns.pki import MAX_CSR_BYTES
from server_push.fleet.enrol import DEFAULT_TTL, MAX_TTL, MIN_TTL
from server_push.web.api import CHANGE, ID, NAME, Bundle, Caller, Strict, Svc, refusals
from server_push.web.body_limit import read_limited
from server_push.web.errors import error_responses

router = APIRouter(prefix="/api/v1", tags=["enrolment"])

# A CSR, a token and an id, with room for JSON escaping; nothing legitimate is larger.
MAX_ENROL_BODY = 2 * MAX_CSR_BYTES


class EnrolTokenCreate(Strict):
    groups: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list,
                                                              max_length=32)
    ttl: float = Field(default=DEFAULT_TTL, ge=MIN_TTL, le=MAX_TTL,
                       description="seconds until the token expires unused")
    agent_id: str | None = Field(default=None, pattern=NAME,
                                 description="the one agent id the token may enrol")


class EnrolRequest(Strict):
    token: str = Field(min_length=1, max_length=128)
    agent_id: str = Field(pattern=NAME)
    csr: str = Field(min_length=1, max_length=MAX_CSR_BYTES,
                     description="PEM certificate signing request; its subject is ignored")


@router.post("/enrol-tokens", status_code=201,
             summary="Create a one-time enrolment token; shown only in this answer",
             responses=refusals(*CHANGE))
async def create_enrol_token(body: EnrolTokenCreate, services: Svc,
                             caller: Caller) -> dict[str, Any]:
    made = await services.enrolment().create_token(body.groups, body.ttl, body.agent_id,
                                                  caller.actor)
    return {"id": made.id, "token": made.token, "groups": made.groups,
            "agent_id": made.agent_id, "expires_at": made.expires_at}


@router.get("/enrol-tokens", summary="Enrolment tokens (without secrets)",
            responses=refusals())
async def list_enrol_tokens(services: Svc, _: Caller) -> list[dict[str, Any]]:
    return await services.enrolment().tokens()


@router.delete("/enrol-tokens/{token_id}", status_code=204,
               summary="Cancel an unused enrolment token",
               responses=refusals(403, 404, 409, 422))
async def cancel_enrol_token(token_id: Annotated[str, Path(pattern=ID)], services: Svc,
                             caller: Caller) -> Response:
    await services.enrolment().cancel(token_id, caller.actor)
    return Response(status_code=204)


@router.post("/enrol", status_code=201, response_model=Bundle,
             summary="An installer trades a one-time token and a CSR for its identity",
             description="No admin credentials: the token is the credential. The answer "
                         "is the agent's bundle without a private key.",
             responses=error_responses(400, 401, 403, 409, 413, 422, 503),
             openapi_extra={"requestBody": {
                 "required": True,
                 "content": {"application/json": {"schema": EnrolRequest.model_json_schema()}}}})
async def enrol(request: Request, services: Svc) -> Bundle:
    # Read with a limit before parsing: this route is open to anyone.
    raw = await read_limited(request, MAX_ENROL_BODY, "request")
    try:
        body = EnrolRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    bundle = await services.enrolment().enrol(body.token, body.agent_id, body.csr)
    return Bundle(agent_id=bundle.agent_id, auth=bundle.auth, files=bundle.files)
