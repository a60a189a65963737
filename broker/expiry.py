"""Which stored (offline) sessions have expired, sans-IO.

amqtt 0.12.1's ``Broker._session_monitor`` scans every session, connected or
not, twice a second: with 10,000 agents connected and idle that was most of
the broker's idle CPU (2.7 % of a core, 0.7 % without it; bench/README.md).
Here a session enters the watch when its client disconnects and leaves it
when the client comes back; sessions are kept in disconnect order, so a check
looks at the expired ones and one more, whatever the fleet's size.
"""

from __future__ import annotations

from collections import OrderedDict


class SessionExpiry:
    """Disconnected persistent sessions, oldest first, on an explicit clock."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._since: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._since)

    def disconnected(self, client_id: str, now: float) -> None:
        """The client's session is kept offline from ``now`` on."""
        self._since.pop(client_id, None)
        self._since[client_id] = now

    def forget(self, client_id: str) -> None:
        """The client is back, or its session is gone."""
        self._since.pop(client_id, None)

    def due(self, now: float) -> list[str]:
        """Remove and return the sessions offline for ``ttl`` or longer."""
        expired = []
        while self._since:
            client_id, since = next(iter(self._since.items()))
            if now - since < self.ttl:
                break
            self._since.popitem(last=False)
            expired.append(client_id)
        return expired
