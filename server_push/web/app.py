"""The ASGI application: the REST API, the agents' sync endpoints and the
console, over one set of services."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server_push.security.console_sessions import SessionStore
from server_push.security.users import Users
from server_push.services import Services
from server_push.web import (
    api,
    api_docs,
    broker_auth_api,
    campaign_api,
    enrol_api,
    errors,
    install_api,
    sessions_api,
    sync_api,
    users_api,
    wol_api,
)
from server_push.web.body_limit import BodyLimit
from server_push.web.console import STATIC_DIR, STATIC_PATH
from server_push.web.console import router as console_router
from server_push.web.console.session_cookie import ConsoleSessions
from server_push.web.http_metrics import HttpMetrics
from server_push.web.security_headers import SecurityHeaders

VERSION = "0.1.0"


def create_app(services: Services, session_secret: str) -> FastAPI:
    """The app for ``services``; ``session_secret`` signs the console's device cookies."""
    app = FastAPI(title="epns management server", version=VERSION,
                  description="Wake-ups with a delivery contract, Wake-on-LAN, agent sync.",
                  # Served by api_docs.py, behind a login.
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    # Signs the console's device cookies (console/device_cookie.py).
    app.state.session_secret = session_secret
    console = services.settings.console
    # Console sessions are rows in the database; the cookie holds only the
    # session's secret (console/session_cookie.py).
    app.state.console_sessions = SessionStore(services.sessions, idle=console.session_idle_timeout,
                                              lifetime=console.session_max_age)
    app.state.users = Users(services.sessions)
    app.add_middleware(ConsoleSessions, store=app.state.console_sessions,
                       skip_prefix=STATIC_PATH)
    app.add_middleware(BodyLimit, max_bytes=services.settings.http.max_body)
    app.add_middleware(SecurityHeaders, hsts_max_age=services.settings.http.hsts_max_age)
    # Outermost: it counts the answers of the layers above too (413, 401...).
    app.add_middleware(HttpMetrics, metrics=services.metrics)
    errors.install(app)
    app.include_router(api.router)
    app.include_router(sync_api.router)
    app.include_router(wol_api.router)
    app.include_router(campaign_api.router)
    app.include_router(enrol_api.router)
    app.include_router(install_api.router)
    app.include_router(broker_auth_api.router)
    app.include_router(sessions_api.router)
    app.include_router(api_docs.router)
    app.include_router(users_api.router)
    app.include_router(console_router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="console-static")
    return app
