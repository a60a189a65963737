"""The console's live updates: bus notices as a Server-Sent Events stream.

Each notice is one ``data:`` line of JSON (``{"kind": "agent", "id": …}`` and
the like); the page re-reads what changed through the API. A comment line every
``keepalive`` seconds keeps proxies and the browser from timing the stream out.
The stream ends when the client goes away (Starlette cancels it) or when the
server stops (the bus's ``closing`` notice), so a graceful shutdown never
waits for open consoles.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from server_push.fleet.bus import CLOSING, Bus

KEEPALIVE = 15.0
# How long the browser waits before it reconnects a dropped stream (ms).
RETRY_MS = 3000


async def notices(bus: Bus, keepalive: float = KEEPALIVE) -> AsyncIterator[str]:
    """The event stream of ``bus``, until it closes or the consumer stops."""
    async with bus.subscribe() as queue:
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            try:
                notice = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if notice.get("kind") == CLOSING:
                yield "event: closing\ndata: {}\n\n"
                return
            yield f"data: {json.dumps(notice, separators=(',', ':'))}\n\n"
