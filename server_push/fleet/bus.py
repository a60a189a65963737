"""An in-process fan-out of change notices, for the console's live views (SSE).

Publishers never wait: a subscriber that falls behind loses its oldest notices
and gets a ``resync`` notice instead, telling it to reload what it shows.
When the server stops, ``close`` hands every subscriber a last ``closing``
notice, so long-lived streams end before the HTTP server waits for them.
With several servers on one database, ``relay`` carries each notice to the
other replicas too (``cluster.py``), which ``deliver`` it to their own
subscribers, so every console is live whichever replica made the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

QUEUE_LIMIT = 256
CLOSING = "closing"


class Bus:
    """Topic-less notices: ``{"kind": "agent", "id": …}`` and the like."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.closed = False
        self.relay: Callable[[dict[str, Any]], None] | None = None

    def publish(self, notice: dict[str, Any]) -> None:
        """Hand ``notice`` to every subscriber (and the relay), without waiting."""
        if self.relay is not None:
            self.relay(notice)
        self.deliver(notice)

    def deliver(self, notice: dict[str, Any]) -> None:
        """Hand ``notice`` to this process's subscribers only."""
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                queue.get_nowait()
                queue.put_nowait({"kind": "resync"})
            queue.put_nowait(notice)

    def close(self) -> None:
        """The server is stopping: tell every subscriber, now and later, to end."""
        self.closed = True
        self.deliver({"kind": CLOSING})

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of notices for as long as the context lasts."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        if self.closed:
            queue.put_nowait({"kind": CLOSING})
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

