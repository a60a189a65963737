"""The agents' sync endpoints: ``POST`` a report, then ``GET`` the server's
changes, on ``/api/v1/agents/{agent_id}/sync`` (``epns.sync_contract``).

- The agent proves itself with its client certificate or its token, and may
  touch only its own resource (403 otherwise).
- Bodies are read up to ``sync.max_body`` bytes (413 beyond), JSON or XML;
  XML goes through defusedxml, so a bomb or an entity trick is a 400.
- At most ``sync.max_concurrent`` syncs run at once; the others get 503 with
  a jittered Retry-After, so a wake-all storm drains instead of piling up.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from epns.errors import BadRequest, Forbidden, MessageError, PayloadTooLarge, TooManyRequests
from epns.sync_contract import (
    SyncFormat,
    SyncReply,
    decode_report,
    encode_reply,
    format_of,
)
from server_push.auth import AgentCaller
from server_push.https import client_cert_pem
from server_push.services import Services

router = APIRouter(tags=["sync"])


async def _caller(services: Services, request: Request, agent_id: str) -> AgentCaller:
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    caller = await services.agent_auth.authenticate(client_cert_pem(request.scope), bearer)
    if caller.agent_id != agent_id:
        raise Forbidden(f"agent {caller.agent_id!r} may sync only its own resource, "
                        f"not {agent_id!r}", code="other_agent")
    return caller


@contextlib.asynccontextmanager
async def _admitted(services: Services) -> AsyncIterator[None]:
    slots = services.sync_slots
    if slots.locked():
        wait = services.settings.sync.retry_after
        raise TooManyRequests("the server is busy with other syncs; retry later",
                              retry_after=wait * random.uniform(1.0, 2.0),  # noqa: S311 - jitter
                              status=503, code="busy")
    async with slots:
        yield


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the report is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the report exceeds the limit of {limit} bytes")
    return bytes(body)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.post("/api/v1/agents/{agent_id}/sync", status_code=204,
             summary="An agent reports its changed data (JSON or XML)",
             responses={204: {"description": "report accepted"}})
async def post_report(agent_id: str, request: Request) -> Response:
    """The first step of a sync."""
    arrived = time.time()
    services = _services(request)
    await _caller(services, request, agent_id)
    async with _admitted(services):
        raw = await _read_body(request, services.settings.sync.max_body)
        try:
            fmt = format_of(request.headers.get("content-type", ""))
            report = decode_report(raw, fmt, max_bytes=services.settings.sync.max_body)
        except MessageError as exc:
            raise BadRequest(str(exc), code="bad_report") from exc
        if report.agent_id != agent_id:
            raise BadRequest(f"the report is for {report.agent_id!r}, posted to {agent_id!r}",
                             code="bad_report")
        await services.tasks.close(agent_id, report.results, arrived)
        await services.registry.on_sync(agent_id, ok=True, detail="report received",
                                        reason=report.reason.value, at=arrived,
                                        changes=report.changes)
        # The POST is the sync's first step: its arrival, on the server's own
        # clock, is a start no agent clock can skew.
        await services.wakeups.on_sync(agent_id, started_at=arrived, sync_id=report.sync_id,
                                       wakes=report.wakes, now=time.time())
    return Response(status_code=204)


@router.get("/api/v1/agents/{agent_id}/sync",
            summary="An agent fetches the server's changes: hints and tasks",
            responses={200: {"content": {"application/json": {}, "application/xml": {}}}})
async def get_reply(agent_id: str, request: Request) -> Response:
    """The second step of a sync; answered in the format the agent accepts."""
    services = _services(request)
    await _caller(services, request, agent_id)
    async with _admitted(services):
        accept = request.headers.get("accept", "")
        fmt = SyncFormat.XML if "application/xml" in accept else SyncFormat.JSON
        hints = await services.config.hints()
        tasks = await services.tasks.hand_out(agent_id, time.time())
        reply = SyncReply(sync_interval=hints.sync_interval, keepalive=hints.keepalive,
                          tasks=tasks)
        return Response(encode_reply(reply, fmt), media_type=fmt.content_type)
