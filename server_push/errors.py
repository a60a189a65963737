"""One error body for every refusal of the API, the sync endpoints and the
console's JSON calls::

    {"error": {"status": 404, "code": "unknown_agent", "message": "no agent 'x'"}}

RequestError carries its status and code; validation errors become 422
``invalid_request`` naming the field; an unexpected exception is logged with
its traceback and answered 500 ``internal`` without details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from epns.errors import RequestError, StoreError, TooManyRequests, TopicError
from epns.logs import event

log = logging.getLogger(__name__)


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The one error shape."""
    return {"error": {"status": status, "code": code, "message": message}}


def _respond(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


async def _request_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    headers = None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return _respond(exc.status, exc.code, exc.detail, headers)


async def _topic_error(_request: Request, exc: Exception) -> JSONResponse:
    return _respond(422, "invalid_name", str(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return _respond(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _respond(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    event(log, "store_error", logging.ERROR, path=request.url.path, error=str(exc))
    return _respond(503, "store_unavailable", "the database is unavailable; retry shortly",
                    {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(500, "internal", "unexpected server error; the server log has details")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(TopicError, _topic_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected)
