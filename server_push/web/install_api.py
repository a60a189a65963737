"""The one-line installer's files, open to anyone (``/install/``): the fleet
CA, the Linux script and the agent packages. None of them is a secret; the
enrolment token that the command carries is. ``server_push/fleet/installer.py``
says how the command pins the CA."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, Response

from server_push.fleet import installer
from server_push.fleet.agents import public_url
from server_push.web.api import Svc
from server_push.web.errors import error_responses

router = APIRouter(prefix="/install", tags=["installer"])
PACKAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$"
PEM = "application/x-pem-file"
SCRIPT = "text/x-shellscript"
PACKAGE = "application/octet-stream"


def _content(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": what, "content": {media_type: {"schema": {"type": "string"}}}}}


@router.get("/ca.crt", summary="The fleet CA, for the install command to check against the "
                               "fingerprint pinned in it", response_class=Response,
            responses=_content(PEM, "the CA file, as its fingerprint is taken"))
async def ca_certificate(services: Svc) -> Response:
    return Response(installer.ca_bytes(services.settings), media_type=PEM)


@router.get("/linux.sh", summary="The Linux installer script (404 while [enrol] packages_dir "
                                 "offers no package)", response_class=Response,
            responses={**_content(SCRIPT, "the script, for sh"), **error_responses(404)})
async def linux_script(services: Svc) -> Response:
    text = installer.script(services.settings, public_url(services.settings))
    return Response(text, media_type=SCRIPT)


@router.get("/packages/{name}", summary="An agent package the installer script names",
            response_class=FileResponse,
            responses={**_content(PACKAGE, "the package file"), **error_responses(404, 422)})
async def agent_package(name: Annotated[str, Path(pattern=PACKAGE_NAME)],
                        services: Svc) -> FileResponse:
    return FileResponse(installer.package(services.settings, name),
                        media_type=PACKAGE, filename=name)
