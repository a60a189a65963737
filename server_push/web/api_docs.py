"""The OpenAPI document and the interactive API docs, behind a login.

The document lists every operation an attacker would probe, so it is read
with an API token or a console session like the API itself. The docs page
is Swagger UI from the pinned ``fastapi-offline`` package (its
``static/swagger-ui-bundle.js`` and ``swagger-ui.css``; Swagger UI 5.32.6 in
1.7.7, Apache-2.0), served by this server: no script from a CDN, no floating
version. The page needs a console session (a browser cannot send a bearer
token when it opens a page) and sends the session's CSRF token with the
requests "Try it out" makes (``/console/static/api-docs.js``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment

from epns.errors import NotFound
from server_push.web.api import Caller

router = APIRouter(include_in_schema=False)

DOCS = "/api/docs"
DOCUMENT = "/api/v1/openapi.json"
_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
           "swagger-ui.css": "text/css; charset=utf-8"}
# Swagger UI sets style attributes from its script: inline styles only, no
# inline script, nothing from elsewhere.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
_PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="csrf-token" content="{{ csrf }}">
  <meta name="openapi-url" content="{{ document }}">
  <title>{{ title }} · API docs</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{{ docs }}/static/swagger-ui.css">
  <script src="{{ docs }}/static/swagger-ui-bundle.js" defer></script>
  <script src="/console/static/api-docs.js" defer></script>
</head>
<body><div id="swagger-ui"></div></body>
</html>
""")


@router.get(DOCUMENT)
async def openapi_document(request: Request, _: Caller) -> JSONResponse:
    """The OpenAPI document, for an API token or a console session."""
    document: dict[str, Any] = request.app.openapi()
    return JSONResponse(document)


@router.get(DOCS)
async def docs_page(request: Request) -> Response:
    """Swagger UI for the logged-in console user, or the way to the login."""
    session = request.scope.get("session") or {}
    if not isinstance(session.get("user"), str):
        return RedirectResponse(f"/console/login?next={DOCS}", status_code=303)
    html = _PAGE.render(csrf=session.get("csrf", ""), document=DOCUMENT, docs=DOCS,
                        title=request.app.title)
    return HTMLResponse(html, headers={"Content-Security-Policy": _CSP,
                                       "Cache-Control": "no-store"})


@router.get(DOCS + "/static/{name}")
async def docs_asset(name: str) -> Response:
    """Swagger UI's script and style sheet, from the pinned package."""
    if name not in _ASSETS:
        raise NotFound(f"no API docs file {name!r}", code="not_found")
    path = resources.files("fastapi_offline").joinpath("static", name)
    return FileResponse(str(path), media_type=_ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
