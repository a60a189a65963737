"""The web console: Jinja2 page shells with plain JavaScript and CSS (no build
step, nothing loaded from elsewhere), on top of the REST API."""

from server_push.web.console.routes import STATIC_DIR, STATIC_PATH, router

__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
