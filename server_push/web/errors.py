"""One error body for every refusal of the API, the sync endpoints and the
console's JSON calls::

    {"error": {"status": 404, "code": "unknown_agent", "message": "no agent 'x'"}}

RequestError carries its status and code; validation errors become 422
``invalid_request`` naming the field; an unexpected exception is logged with
its traceback and answered 500 ``internal`` without details. ``ErrorBody`` and
``error_responses`` put the same shape into the OpenAPI document.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from epns.errors import RequestError, StoreError, TooManyRequests, TopicError
from epns.logs import event

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """What was refused: the HTTP status, a stable code, words for a person."""

    status: int
    code: str
    message: str


class ErrorBody(BaseModel):
    """The one error shape."""

    error: ErrorDetail


_MEANINGS = {
    400: "the body or a parameter is not acceptable",
    401: "no credentials, or credentials that do not verify",
    403: "authenticated, but not allowed (the CSRF token, another agent's resource)",
    404: "no such resource",
    409: "the resource exists already, or its state forbids the request",
    413: "the body is over the limit",
    422: "a parameter or the body does not match this schema",
    429: "too many requests: retry after Retry-After seconds",
    503: "busy, or the database is unavailable: retry after Retry-After seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer", "minimum": 1}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries: each refusal answered with the error body,
    and with Retry-After where the caller is told to come back."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status],
                     **({"headers": _RETRY_AFTER} if status in (429, 503) else {})}
            for status in statuses}


# What FastAPI documents, on its own, for a route with parameters: the body of
# its default validation handler, which ``_validation_error`` replaces.
_FASTAPI_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
_ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _document_validation_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what a 422 really is on every route,
    including routes that declare no refusals of their own."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        for item in document.get("paths", {}).values():
            for operation in item.values():
                declared = operation.get("responses", {}).get("422", {})
                content = declared.get("content", {}).get("application/json", {})
                if content.get("schema") == _FASTAPI_422:
                    content["schema"] = _ERROR_BODY_REF
                    declared["description"] = _MEANINGS[422]
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        if "ErrorBody" not in schemas:
            body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(body.pop("$defs"))
            schemas["ErrorBody"] = body
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The one error shape, as JSON-ready data."""
    return {"error": {"status": status, "code": code, "message": message}}


def _respond(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


# A limiter that never refills (per_minute = 0) asks to wait forever; the
# header needs a whole number of seconds.
_MAX_RETRY_AFTER = 86400


async def _request_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    headers = None
    if isinstance(exc, TooManyRequests):
        seconds = max(1, round(min(exc.retry_after, _MAX_RETRY_AFTER)))
        headers = {"Retry-After": str(seconds)}
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


# Refusals raised by Starlette and FastAPI themselves (unknown route, method,
# a body that cannot be read), under the codes our own refusals use.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large"}


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _respond(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    event(log, "store_error", logging.ERROR, path=request.url.path, error=str(exc))
    return _respond(503, "store_unavailable", "the database is unavailable; retry shortly",
                    {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(500, "internal", "unexpected server error; the server log has details")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``, and document what they answer."""
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(TopicError, _topic_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    # A locked, lost or unreachable database is a reason to come back, not a bug.
    app.add_exception_handler(OperationalError, _store_error)
    app.add_exception_handler(Exception, _unexpected)
    _document_validation_errors(app)
