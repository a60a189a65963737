"""The agents' sync endpoints: ``POST`` a report, then ``GET`` the server's
changes, on ``/api/v1/agents/{agent_id}/sync`` (``epns.sync_contract``).

- The agent proves itself with its client certificate or its token, and may
  touch only its own resource (403 otherwise).
- Bodies are read up to ``sync.max_body`` bytes (413 beyond), JSON or XML;
  XML goes through defusedxml, so a bomb or an entity trick is a 400.
- At most ``sync.max_concurrent`` syncs run at once; up to ``sync.max_queued``
  more wait ``sync.queue_wait`` seconds for a slot (``sync_admission.py``);
  the rest get 429 with a jittered Retry-After, so a wake-all storm drains
  instead of piling up.
- ``POST /api/v1/agents/{agent_id}/renew`` renews the identity the agent
  proves itself with (``AgentAdmin.renew``): a certificate for the new key of
  its CSR, or a new token; each outcome is counted for ``/metrics``.
- Each agent has budgets (``[budgets]``): ``syncs_per_minute`` reports
  (429 ``over_budget`` beyond, with the wait in Retry-After) and
  ``inventory_bytes`` of stored inventory (413 ``inventory_over_budget``,
  nothing of the report stored). Every field is checked by the contract
  (``epns.sync_contract`` and ``epns.fields``): 400 ``bad_report`` names
  the first field that breaks it.

The handlers read the body themselves (size limit, two formats), so the
OpenAPI document is told its shape by hand: ``REPORT_SCHEMA``, ``REPLY_SCHEMA``.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from epns import pki
from epns.errors import (
    BadRequest,
    Forbidden,
    MessageError,
    PayloadTooLarge,
    RequestError,
    TooManyRequests,
)
from epns.sync_contract import (
    VERSION,
    SyncFormat,
    SyncReason,
    SyncReply,
    SyncReport,
    TaskStatus,
    decode_report,
    encode_reply,
    format_of,
)
from server_push.security.auth import AgentCaller
from server_push.services import Services
from server_push.web.api import NAME, AgentId
from server_push.web.body_limit import read_limited
from server_push.web.errors import error_responses
from server_push.web.https import client_cert_pem

router = APIRouter(tags=["sync"])

agent_token = HTTPBearer(auto_error=False, scheme_name="agentToken",
                         description="The agent's token (agent.token in its bundle). An "
                                     "agent with a client certificate presents that in the "
                                     "TLS handshake instead, and needs no header.")
AgentToken = Annotated[HTTPAuthorizationCredentials | None, Security(agent_token)]

_STRING = {"type": "string", "minLength": 1}
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["v", "agent_id", "sync_id", "started_at", "reason"],
    "properties": {
        "v": {"const": VERSION}, "agent_id": {"type": "string", "pattern": NAME},
        "sync_id": _STRING, "started_at": {"type": "number"},
        "reason": {"enum": [r.value for r in SyncReason]},
        "wakes": {"type": "array", "items": _STRING},
        "changes": {"type": "object"},
        "results": {"type": "array", "items": {
            "type": "object", "required": ["task_id", "status"],
            "properties": {"task_id": _STRING, "detail": {"type": "string"},
                           "status": {"enum": [s.value for s in TaskStatus]}}}},
    },
}
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["v", "keepalive", "tasks"],
    "properties": {
        "v": {"const": VERSION}, "sync_interval": {"type": "number"},
        "keepalive": {"type": "object", "additionalProperties": {"type": "integer"}},
        "tasks": {"type": "array", "items": {
            "type": "object", "required": ["id", "type", "body"],
            "properties": {"id": {"type": "string"}, "type": {"type": "string"},
                           "body": {"type": "object"}}}},
        "trust": {"type": "string",
                  "description": "the signed trust announcement (key rotation, epns.trust)"},
    },
}
_XML = {"schema": {"type": "string",
                   "description": "the same document in XML (epns.sync_contract)"}}


async def _caller(services: Services, request: Request, agent_id: str,
                  token: HTTPAuthorizationCredentials | None) -> AgentCaller:
    bearer = token.credentials.strip() if token is not None else None
    caller = await services.agent_auth.authenticate(client_cert_pem(request.scope), bearer)
    if caller.agent_id != agent_id:
        raise Forbidden(f"agent {caller.agent_id!r} may sync only its own resource, "
                        f"not {agent_id!r}", code="other_agent")
    return caller


@contextlib.asynccontextmanager
async def _admitted(services: Services) -> AsyncIterator[None]:
    admission = services.sync_admission
    if not await admission.acquire():
        wait = services.settings.sync.retry_after
        raise TooManyRequests("the server is busy with other syncs; retry later",
                              retry_after=wait * random.uniform(1.0, 2.0),  # noqa: S311 - jitter
                              code="busy")
    try:
        yield
    finally:
        admission.release()


@contextlib.contextmanager
def _measured(services: Services, step: str) -> Iterator[None]:
    """Count one sync step and its duration: ok, or refused with its status
    and code (an unexpected failure as 500 ``internal_error``). In memory: a
    sync costs the metrics no query."""
    started = time.perf_counter()
    status, code = 200, None
    try:
        yield
    except RequestError as exc:
        status, code = exc.status, exc.code
        raise
    except Exception:
        status, code = 500, "internal_error"
        raise
    except BaseException:
        # Cancelled: the agent went away before the answer (nginx's 499).
        status, code = 499, "cancelled"
        raise
    finally:
        services.metrics.observe_sync(step, time.perf_counter() - started, status, code)


def _check_report(report: SyncReport, agent_id: str) -> None:
    if report.agent_id != agent_id:
        raise BadRequest(f"the report is for {report.agent_id!r}, posted to {agent_id!r}",
                         code="bad_report")


def _within_budget(services: Services, agent_id: str, now: float) -> None:
    """One agent may report ``budgets.syncs_per_minute`` times a minute: a
    hostile or broken one must not take the sync slots of the fleet."""
    wait = services.sync_budget.take(agent_id, now)
    if wait > 0:
        services.metrics.budget_refusals["syncs_per_minute"] += 1
        budgets = services.settings.budgets
        raise TooManyRequests(
            f"agent {agent_id!r} is over its budget of {budgets.syncs_per_minute:g} syncs a "
            f"minute (burst {budgets.syncs_burst}); retry in {wait:.0f} s",
            retry_after=wait, code="over_budget")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.post("/api/v1/agents/{agent_id}/sync", status_code=204,
             summary="An agent reports its changed data (JSON or XML)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": REPORT_SCHEMA}, "application/xml": _XML}}},
             responses={204: {"description": "report accepted"},
                        **error_responses(400, 401, 403, 413, 422, 429, 503)})
async def post_report(agent_id: AgentId, request: Request, token: AgentToken) -> Response:
    """The first step of a sync."""
    arrived = time.time()
    services = _services(request)
    with _measured(services, "report"):
        caller = await _caller(services, request, agent_id, token)
        _within_budget(services, agent_id, arrived)
        async with _admitted(services):
            raw = await read_limited(request, services.settings.sync.max_body, "report")
            try:
                fmt = format_of(request.headers.get("content-type", ""))
                report = decode_report(raw, fmt, max_bytes=services.settings.sync.max_body)
            except MessageError as exc:
                raise BadRequest(str(exc), code="bad_report") from exc
            _check_report(report, agent_id)
            validity = (None if caller.issued_at is None or caller.expires_at is None
                        else (caller.issued_at, caller.expires_at))
            # The registry's record goes first in the sync's one transaction,
            # as it may refuse the report (the inventory budget) before
            # anything of it is stored. The POST is the sync's first step:
            # its arrival, on the server's own clock, is a start no agent
            # clock can skew.
            record = functools.partial(
                services.registry.record_sync, agent_id=agent_id, ok=True,
                detail="report received", reason=report.reason.value, at=arrived,
                changes=report.changes,
                inventory_budget=services.settings.budgets.inventory_bytes, identity=validity)
            try:
                await services.wakeups.on_sync(agent_id, started_at=arrived,
                                               sync_id=report.sync_id, wakes=report.wakes,
                                               now=time.time(), joined=record)
            except PayloadTooLarge:
                services.metrics.budget_refusals["inventory_bytes"] += 1
                raise
            services.registry.announce(agent_id)
            await services.tasks.close(agent_id, report.results, arrived)
        services.metrics.sync_reasons[report.reason.value] += 1
        return Response(status_code=204)


@router.get("/api/v1/agents/{agent_id}/sync",
            summary="An agent fetches the server's changes: hints and tasks",
            responses={200: {"description": "hints and tasks, in the format the agent accepts",
                             "content": {"application/json": {"schema": REPLY_SCHEMA},
                                         "application/xml": _XML}},
                       **error_responses(401, 403, 422, 429, 503)})
async def get_reply(agent_id: AgentId, request: Request, token: AgentToken) -> Response:
    """The second step of a sync; answered in the format the agent accepts."""
    services = _services(request)
    with _measured(services, "reply"):
        await _caller(services, request, agent_id, token)
        async with _admitted(services):
            accept = request.headers.get("accept", "")
            fmt = SyncFormat.XML if "application/xml" in accept else SyncFormat.JSON
            hints = await services.config.hints()
            tasks = await services.tasks.hand_out(agent_id, time.time())
            announcement = services.trust.rotation.announcement
            reply = SyncReply(sync_interval=hints.sync_interval, keepalive=hints.keepalive,
                              tasks=tasks,
                              trust=None if announcement is None else announcement.decode())
            return Response(encode_reply(reply, fmt), media_type=fmt.content_type)


class RenewBody(BaseModel):
    """What an agent sends to renew: a certificate agent the CSR of a key it
    has just made; a token agent nothing."""

    model_config = ConfigDict(extra="forbid")
    csr: str | None = Field(default=None, max_length=pki.MAX_CSR_BYTES,
                            description="PEM CSR of the agent's new key (certificate agents)")


class Renewed(BaseModel):
    """The new identity: ``certificate`` (PEM) and ``serial``, or ``token``
    and ``token_id``; valid from ``issued_at`` to ``expires_at`` (UNIX s)."""

    agent_id: str
    method: str
    certificate: str | None = None
    serial: str | None = None
    token: str | None = None
    token_id: str | None = None
    issued_at: float
    expires_at: float


@router.post("/api/v1/agents/{agent_id}/renew", response_model=Renewed,
             summary="An agent renews its certificate (with a CSR) or its token",
             responses=error_responses(400, 401, 403, 413, 422, 429, 503))
async def renew(agent_id: AgentId, body: RenewBody, request: Request,
                token: AgentToken) -> Renewed:
    """The agent's new identity, on the channel its current one proves; the
    current one stays valid until it expires."""
    services = _services(request)
    outcomes = services.metrics.renewals
    try:
        caller = await _caller(services, request, agent_id, token)
        issued = await services.agents.renew(caller, body.csr, time.time())
    except RequestError as exc:
        outcomes[exc.code] += 1
        raise
    outcomes["renewed"] += 1
    certificate = issued.files.get("agent.crt")
    new_token = issued.files.get("agent.token")
    return Renewed(agent_id=agent_id, method=caller.method, certificate=certificate,
                   serial=issued.serial, token=new_token.strip() if new_token else None,
                   token_id=issued.token_id, issued_at=issued.issued_at,
                   expires_at=issued.expires_at)
