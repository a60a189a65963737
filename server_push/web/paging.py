"""Paging of the API's lists: ``limit`` and ``offset``, with the total in
``X-Total-Count`` and the neighbouring pages in ``Link`` (RFC 8288).

Offsets, not cursors: the console shows "page N of M" and jumps to a page,
which a cursor cannot do; a stable order (every sort ends on a unique key)
keeps pages disjoint while the data stays as it is. The body stays a bare
list, so readers written before paging still read it.

FastAPI ignores query parameters a route does not declare; a list route
refuses them instead (``refuse_unknown``), so a misspelt filter is a 422,
not a page of everything.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request, Response

from server_push.fleet.agent_query import InvalidQuery

TOTAL_HEADER = "X-Total-Count"
# Browsers hide response headers from scripts unless the server exposes them;
# the console is same-origin, but integrations in a browser need this.
EXPOSED = f"{TOTAL_HEADER}, Link"


def refuse_unknown(request: Request, allowed: Iterable[str]) -> None:
    """InvalidQuery (422) naming each query parameter not in ``allowed``."""
    known = set(allowed)
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        raise InvalidQuery(f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(map(repr, unknown))}: this list takes "
                           f"{', '.join(sorted(known))}")


def page_headers(request: Request, response: Response, total: int, limit: int | None,
                 offset: int) -> None:
    """Set X-Total-Count and, when paged, Link with first, prev, next and last."""
    response.headers[TOTAL_HEADER] = str(total)
    response.headers["Access-Control-Expose-Headers"] = EXPOSED
    if limit is None:
        return
    last = max(0, (total - 1) // limit * limit)
    pages = {"first": 0, "last": last}
    if offset > 0:
        pages["prev"] = max(0, offset - limit)
    if offset + limit < total:
        pages["next"] = offset + limit
    # Relative links: right behind a proxy or the broker's one-port relay too.
    links = []
    for rel, at in pages.items():
        url = request.url.include_query_params(offset=at, limit=limit)
        links.append(f'<{url.path}?{url.query}>; rel="{rel}"')
    response.headers["Link"] = ", ".join(links)
