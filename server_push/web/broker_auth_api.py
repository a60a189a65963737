"""The HTTP auth and ACL endpoint for external brokers, so that token agents
(username = agent id, password = token) can use EMQX or Mosquitto with
mosquitto-go-auth's HTTP backend instead of the epns broker.

The decisions are the epns broker's own: ``epns.identity.authenticate`` with the
server's public key and the revocation file, and ``epns.acl.is_allowed``.
Each broker family gets its dialect, since their answers are incompatible:

- EMQX 5 (``/api/v1/broker/emqx/authn`` and ``/authz``) reads HTTP 200 with
  ``{"result": "allow" | "deny"}``; any other status means "ignore", which an
  authorizer chain may turn into "allow", so every decision here is a 200.
- mosquitto-go-auth (``/api/v1/broker/go-auth/user``, ``/superuser``, ``/acl``)
  reads a 2xx as allow and anything else as deny; its ``json`` response mode
  wants ``{"ok": true}``, its ``text`` mode the body ``ok``
  (``?response_mode=text`` on the URI).

Both send JSON, form or query parameters (GET); all are accepted. The broker
itself logs in with HTTP Basic (``broker_auth.username``/``secret``):
mosquitto-go-auth cannot send headers, but Go sends a URL's user info as
Basic. The right credentials always pass; wrong ones are rate limited per
peer address (429 past the bucket), so failures from the broker's address
never deny the broker itself. An agent's wrong token is a "deny" answer, not
a failure of the broker's login: it costs no other agent anything. With no
secret configured the endpoint answers 404: never an open password oracle.

The routes stay out of the OpenAPI document: brokers are configured from
docs/external-brokers.md, not generated from it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from epns import acl, pki
from epns.errors import (
    BadRequest,
    IdentityError,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from epns.identity import Credentials, Identity, Method, Role, authenticate
from epns.logs import event
from epns.server_config import BrokerAuthSettings
from epns.tokens import PublicKey
from epns.topics import is_valid_name
from server_push.services import Services

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/broker", include_in_schema=False)
METHODS = ["GET", "POST", "PUT"]

# mosquitto-go-auth's ``acc``: Mosquitto's MOSQ_ACL_READ (a message is
# delivered to the client), MOSQ_ACL_WRITE (the client publishes), both, and
# MOSQ_ACL_SUBSCRIBE (a topic filter).
GO_AUTH_ACCESS: dict[str, tuple[acl.Action, ...]] = {
    "1": (acl.Action.RECEIVE,),
    "2": (acl.Action.PUBLISH,),
    "3": (acl.Action.RECEIVE, acl.Action.PUBLISH),
    "4": (acl.Action.SUBSCRIBE,),
}
EMQX_ACTIONS = {"publish": acl.Action.PUBLISH, "subscribe": acl.Action.SUBSCRIBE}
_MAX_BLOCKED = 10_000


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow or deny, and why (for the log and go-auth's ``error``)."""

    allowed: bool
    reason: str = ""


@dataclass
class _Gate:
    """Per-app state: the token keys and the failed-login buckets."""

    settings: BrokerAuthSettings
    # Asked at each login: during a key rotation, two keys verify tokens.
    token_keys: Callable[[], Sequence[PublicKey]]
    failures: dict[str, tuple[float, float]] = field(default_factory=dict)

    def check(self, request: Request) -> None:
        """Let the broker in, or raise 404 (off), 401 or 429.

        The secret is checked first, and the right one always passes: wrong
        tries from the broker's own address (another process on its host, a
        misconfigured second broker) cannot deny the real broker, and so
        every agent. Only wrong credentials spend the address's bucket; past
        it they get 429 instead of 401. The secret is at least 16 random
        characters, so letting it through at any rate tells a guesser nothing
        it could use."""
        if not self.settings.secret:
            raise NotFound("the broker auth endpoint is off: set broker_auth.secret",
                           code="broker_auth_off")
        if self._presented_ok(request.headers.get("authorization", "")):
            return
        peer, now = peer_of(request), time.monotonic()
        tokens, at = self.failures.get(peer, (float(self.settings.failure_burst), now))
        rate = self.settings.failures_per_minute / 60.0
        tokens = min(float(self.settings.failure_burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            raise TooManyRequests("too many failed broker logins from this address",
                                  retry_after=(1.0 - tokens) / rate if rate else 3600.0,
                                  code="broker_auth_throttled")
        if len(self.failures) >= _MAX_BLOCKED:
            self.failures.clear()
        self.failures[peer] = (tokens - 1.0, now)
        event(log, "broker_auth_bad_login", logging.WARNING, peer=peer)
        raise Unauthorized("the broker must log in with HTTP Basic broker_auth.username and "
                           "broker_auth.secret", code="broker_unauthorized")

    def _presented_ok(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, secret = base64.b64decode(encoded.strip(), validate=True).decode(
                ).partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared in full, whatever the first says: no timing hint.
        user_ok = hmac.compare_digest(user.encode(), self.settings.username.encode())
        secret_ok = hmac.compare_digest(secret.encode(), self.settings.secret.encode())
        return user_ok and secret_ok


def peer_of(request: Request) -> str:
    """The address the request came from."""
    return request.client.host if request.client else "?"


def _gate(request: Request) -> _Gate:
    gate: _Gate | None = getattr(request.app.state, "broker_auth_gate", None)
    if gate is None:
        services: Services = request.app.state.services
        settings = services.settings
        gate = _Gate(settings.broker_auth, services.trust.token_keys)
        request.app.state.broker_auth_gate = gate
    return gate


async def _params(request: Request) -> dict[str, str]:
    """The query parameters, overlaid with a JSON or form body."""
    params = dict(request.query_params.items())
    body = await request.body()
    if not body:
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {**params, **{key: values[0] for key, values in form.items()}}
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is neither JSON nor a form", code="bad_body") from exc
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object", code="bad_body")
    # go-auth sends ``acc`` as a JSON number; everything is compared as text.
    return {**params, **{str(k): "" if v is None else str(v) for k, v in data.items()}}


def check_login(params: dict[str, str], key: Sequence[PublicKey],
                services: Services) -> Decision:
    """A token agent's CONNECT, decided as the epns broker decides it."""
    credentials = Credentials(client_id=params.get("clientid", ""),
                              username=params.get("username") or None,
                              password=params.get("password") or None,
                              peer_certificate_der=None)
    try:
        identity = authenticate(credentials, token_key=key,
                                revoked=services.revocations.current(), now=time.time())
    except IdentityError as exc:
        return Decision(False, str(exc))
    if identity.name == pki.SERVER_CLIENT_NAME:
        # The ACL gives this name the server's rights; only its certificate may carry it.
        return Decision(False, f"{identity.name!r} logs in with its certificate, not a token")
    return Decision(True)


def check_access(params: dict[str, str], actions: tuple[acl.Action, ...],
                 services: Services) -> Decision:
    """May this username publish, subscribe or receive on this topic?"""
    username, topic = params.get("username", ""), params.get("topic", "")
    if params.get("clientid", username) != username:
        return Decision(False, "the client id is not the username")
    if not is_valid_name(username):
        return Decision(False, f"{username!r} is not an agent id")
    role = Role.SERVER if username == pki.SERVER_CLIENT_NAME else Role.AGENT
    identity = Identity(username, role, Method.CERTIFICATE if role is Role.SERVER
                        else Method.TOKEN)
    revoked = services.revocations.current().reason(username, None, None)
    if revoked is not None:
        return Decision(False, f"{username!r} is revoked ({revoked})")
    for action in actions:
        if not acl.is_allowed(identity, action, topic):
            return Decision(False, f"{username!r} may not {action} {topic!r}")
    return Decision(True)


def _logged(decision: Decision, what: str, params: dict[str, str]) -> Decision:
    if not decision.allowed:
        event(log, "broker_auth_denied", check=what, username=params.get("username", ""),
              topic=params.get("topic", ""), reason=decision.reason)
    return decision


async def _admitted(request: Request) -> tuple[_Gate, Services, dict[str, str]]:
    gate = _gate(request)
    gate.check(request)
    return gate, request.app.state.services, await _params(request)


# --- EMQX 5 ------------------------------------------------------------------


@router.api_route("/emqx/authn", methods=METHODS)
async def emqx_authn(request: Request) -> Response:
    """EMQX's HTTP authenticator: ``${username}``, ``${password}``, ``${clientid}``."""
    gate, services, params = await _admitted(request)
    decision = _logged(check_login(params, gate.token_keys(), services), "emqx_authn", params)
    return JSONResponse({"result": "allow" if decision.allowed else "deny",
                         "is_superuser": False})


@router.api_route("/emqx/authz", methods=METHODS)
async def emqx_authz(request: Request) -> Response:
    """EMQX's HTTP authorizer: ``${username}``, ``${clientid}``, ``${topic}``,
    ``${action}`` (publish or subscribe)."""
    _, services, params = await _admitted(request)
    action = EMQX_ACTIONS.get(params.get("action", "").lower())
    decision = (check_access(params, (action,), services) if action is not None
                else Decision(False, f"unknown action {params.get('action')!r}"))
    _logged(decision, "emqx_authz", params)
    return JSONResponse({"result": "allow" if decision.allowed else "deny"})


# --- mosquitto-go-auth ---------------------------------------------------------


def _go_auth_answer(request: Request, decision: Decision) -> Response:
    status = 200 if decision.allowed else 403
    if request.query_params.get("response_mode") == "text":
        return PlainTextResponse("ok" if decision.allowed else decision.reason or "denied",
                                 status_code=status)
    return JSONResponse({"ok": decision.allowed, "error": decision.reason}, status_code=status)


@router.api_route("/go-auth/user", methods=METHODS)
async def go_auth_user(request: Request) -> Response:
    """go-auth's ``http_getuser_uri``: ``username``, ``password``, ``clientid``."""
    gate, services, params = await _admitted(request)
    decision = _logged(check_login(params, gate.token_keys(), services), "go_auth_user", params)
    return _go_auth_answer(request, decision)


@router.api_route("/go-auth/superuser", methods=METHODS)
async def go_auth_superuser(request: Request) -> Response:
    """go-auth's ``http_superuser_uri``: nobody is, the server role included."""
    await _admitted(request)
    return _go_auth_answer(request, Decision(False, "epns has no superusers"))


@router.api_route("/go-auth/acl", methods=METHODS)
async def go_auth_acl(request: Request) -> Response:
    """go-auth's ``http_aclcheck_uri``: ``username``, ``clientid``, ``topic``, ``acc``."""
    _, services, params = await _admitted(request)
    actions = GO_AUTH_ACCESS.get(params.get("acc", ""))
    decision = (check_access(params, actions, services) if actions is not None
                else Decision(False, f"unknown acc {params.get('acc')!r}"))
    _logged(decision, "go_auth_acl", params)
    return _go_auth_answer(request, decision)
