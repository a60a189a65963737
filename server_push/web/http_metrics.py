"""Counts every HTTP request by route template, method and status, for
``epns_server_http_requests_total`` (``link/metrics.py``).

A pure ASGI middleware: it reads the status from the response's start and
the route FastAPI matched from the scope (``/api/v1/agents/{agent_id}``,
never the path, so 10,000 agents stay one series). A request no route
matched (a 404, the console's static files) counts under ``unmatched`` or
the mount's path.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server_push.link.metrics import ServerMetrics

__all__ = ["HttpMetrics", "route_template"]


def route_template(scope: Scope) -> str:
    """The template of the route that answered, or ``unmatched``."""
    route: BaseRoute | None = scope.get("route")
    if isinstance(route, Route | Mount):
        return route.path
    return "unmatched"


class HttpMetrics:
    """Counts each answered request into ``metrics.http_requests``."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count it when its answer starts."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self._count(scope, message["status"])
            await send(message)

        try:
            await self._app(scope, receive, counting_send)
        except Exception:
            # Starlette's outermost layer answers it with a 500.
            if not started:
                self._count(scope, 500)
            raise

    def _count(self, scope: Scope, status: int) -> None:
        key = (route_template(scope), scope["method"], str(status))
        self._metrics.http_requests[key] += 1
