"""Console users in the API (``security/users.py``): list, add, disable,
enable, delete, reset a password. A generated password is in the answer once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from server_push.security.console_sessions import MIN_PASSWORD
from server_push.security.users import Users, generated_password
from server_push.web.api import CHANGE, NO_NUL, Caller, Strict, refusals

router = APIRouter(prefix="/api/v1")

UserName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                               description="user name")]


class UserCreate(Strict):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=1024,
                                 pattern=NO_NUL, description="left out: one is generated "
                                                             "and returned once")
    role: Literal["admin"] = "admin"


class PasswordReset(Strict):
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=1024,
                                 pattern=NO_NUL, description="left out: one is generated "
                                                             "and returned once")


def _users(request: Request) -> Users:
    users: Users = request.app.state.users
    return users


@router.get("/users", tags=["users"], summary="Console users (without passwords)",
            responses=refusals())
async def list_users(request: Request, _: Caller) -> list[dict[str, Any]]:
    return await _users(request).listed()


@router.post("/users", tags=["users"], status_code=201,
             summary="Add a console user; a generated password is returned once",
             responses=refusals(*CHANGE, 409))
async def add_user(request: Request, body: UserCreate, caller: Caller) -> dict[str, Any]:
    password = body.password or generated_password()
    user = await _users(request).add(body.username, password, caller.actor, body.role)
    return {**user, **({} if body.password else {"password": password})}


@router.post("/users/{username}/disable", tags=["users"],
             summary="Disable a user: no login, every session ended",
             responses=refusals(*CHANGE, 404, 409))
async def disable_user(request: Request, username: UserName, caller: Caller) -> dict[str, Any]:
    return await _users(request).set_disabled(username, True, caller.actor)


@router.post("/users/{username}/enable", tags=["users"], summary="Enable a disabled user",
             responses=refusals(*CHANGE, 404))
async def enable_user(request: Request, username: UserName, caller: Caller) -> dict[str, Any]:
    return await _users(request).set_disabled(username, False, caller.actor)


@router.delete("/users/{username}", tags=["users"], status_code=204,
               summary="Delete a user and end its sessions (its audit lines stay)",
               responses=refusals(403, 404, 409, 422))
async def delete_user(request: Request, username: UserName, caller: Caller) -> Response:
    await _users(request).delete(username, caller.actor)
    return Response(status_code=204)


@router.post("/users/{username}/password", tags=["users"],
             summary="Reset a user's password (ends its sessions); a generated one is "
                     "returned once", responses=refusals(*CHANGE, 404))
async def reset_password(request: Request, username: UserName, body: PasswordReset,
                         caller: Caller) -> dict[str, Any]:
    password, ended = await _users(request).reset_password(username, caller.actor,
                                                           body.password)
    return {"username": username, "sessions_ended": ended,
            **({} if body.password else {"password": password})}
