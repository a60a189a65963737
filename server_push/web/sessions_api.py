"""Console sessions in the API: an admin lists and revokes them, and a
logged-in user changes their own password (which ends all their sessions).

Revoking deletes the session's row, so the browser holding it is refused at
its next request, on every replica (``security/console_sessions.py``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from epns.errors import BadRequest, Forbidden
from server_push import state_files
from server_push.security.console_sessions import MIN_PASSWORD, SessionStore
from server_push.store.history import audit
from server_push.web.api import CHANGE, ID, NO_NUL, Caller, Strict, Svc, refusals
from server_push.web.console.session_cookie import COOKIE, set_cookie

router = APIRouter(prefix="/api/v1")

MAX_PASSWORD = 1024


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD, pattern=NO_NUL)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD, pattern=NO_NUL)


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


@router.get("/sessions", tags=["sessions"],
            summary="Live console sessions: user, source address, browser, last seen, end",
            responses=refusals())
async def list_sessions(request: Request, _: Caller) -> list[dict[str, Any]]:
    """Every console session that has not ended, the most recently active
    first; ``current`` marks the caller's own."""
    mine = (request.scope.get("session") or {}).get("session_id")
    return [{**row, "current": row["id"] == mine} for row in await _store(request).listed()]


@router.delete("/sessions/{session_id}", tags=["sessions"], status_code=204,
               summary="End a console session: its browser is logged out at its next request",
               responses=refusals(403, 404, 422))
async def delete_session(request: Request,
                         session_id: Annotated[str, Path(pattern=ID)], caller: Caller) -> Response:
    await _store(request).revoke(session_id, caller.actor)
    return Response(status_code=204)


@router.post("/account/password", tags=["sessions"], status_code=204,
             summary="Change the logged-in console user's password; ends all their sessions",
             responses=refusals(*CHANGE))
async def change_password(request: Request, body: PasswordChange, services: Svc,
                          caller: Caller) -> Response:
    """Every session of the user ends (a copied cookie with it); this
    browser gets a new one in the answer's cookie."""
    if caller.kind != "user":
        raise Forbidden("only a console user changes their own password: an API token has "
                        "none (use 'epns-server admin password USER')", code="not_a_user")
    if await services.credentials.check_password(caller.name, body.current_password) is None:
        raise BadRequest("the current password is wrong", code="wrong_password")
    if body.new_password == body.current_password:
        raise BadRequest("the new password is the current one", code="same_password")
    ended = await services.credentials.set_password(caller.name, body.new_password)
    state_files.forget_initial_password(services.settings, caller.name)
    store, now = _store(request), time.time()
    secret, _ = await store.start(caller.name, source=request.client.host if request.client
                                  else "?", user_agent=request.headers.get("user-agent", ""))
    async with services.sessions() as session, session.begin():
        audit(session, at=now, actor=caller.actor, action="password_change",
              targets=[caller.name], outcome=f"password changed, {ended} session(s) ended")
    response = Response(status_code=204)
    set_cookie(response, COOKIE, secret, int(store.lifetime))
    return response
