"""The subscription index, sans-IO.

amqtt keeps subscriptions in a dict of filters and scans every filter on every
publish, and scans every subscriber on every subscribe. Here a concrete topic
maps straight to its subscribers, so delivery to one agent's own topic is one
dict lookup and a fan-out topic is one lookup for all of its subscribers.
Wildcard filters are matched one by one; the contract's ACL allows them to the
server role only, and integrator rules (``epns.acl_rules``) to the identities
they name, so there are a handful whatever the size of the fleet. Filter
syntax is the codec's (``epns.mqtt.filters``): an invalid one never gets here.
"""

from __future__ import annotations

from collections.abc import Iterator

from epns.mqtt.filters import is_wildcard
from epns.topics import filter_matches


class SubscriptionIndex:
    """client id -> filters, and filter -> {client id: granted QoS}."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, int]] = {}
        self._wildcard: dict[str, dict[str, int]] = {}
        self._by_client: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        return sum(len(filters) for filters in self._by_client.values())

    def add(self, client_id: str, topic_filter: str, qos: int) -> None:
        """Subscribe, or replace the QoS of an existing subscription."""
        table = self._wildcard if is_wildcard(topic_filter) else self._exact
        table.setdefault(topic_filter, {})[client_id] = qos
        self._by_client.setdefault(client_id, {})[topic_filter] = qos

    def remove(self, client_id: str, topic_filter: str) -> bool:
        """Unsubscribe; False if there was no such subscription."""
        filters = self._by_client.get(client_id)
        if filters is None or filters.pop(topic_filter, None) is None:
            return False
        if not filters:
            del self._by_client[client_id]
        table = self._wildcard if is_wildcard(topic_filter) else self._exact
        subscribers = table[topic_filter]
        del subscribers[client_id]
        if not subscribers:
            del table[topic_filter]
        return True

    def remove_client(self, client_id: str) -> int:
        """Drop every subscription of one client; returns how many."""
        filters = list(self._by_client.get(client_id, ()))
        for topic_filter in filters:
            self.remove(client_id, topic_filter)
        return len(filters)

    def has(self, client_id: str, topic_filter: str) -> bool:
        """True when the client holds this filter."""
        return topic_filter in self._by_client.get(client_id, {})

    def filters_of(self, client_id: str) -> dict[str, int]:
        """The filters one client holds, with their QoS."""
        return dict(self._by_client.get(client_id, {}))

    def match(self, topic: str) -> Iterator[tuple[str, int]]:
        """(client id, QoS) of every subscription matching ``topic``; a client
        that matches through several filters is yielded once, at its highest QoS."""
        exact = self._exact.get(topic)
        if not self._wildcard:
            if exact:
                yield from exact.items()
            return
        best: dict[str, int] = dict(exact) if exact else {}
        for topic_filter, subscribers in self._wildcard.items():
            if filter_matches(topic_filter, topic):
                for client_id, qos in subscribers.items():
                    if qos > best.get(client_id, -1):
                        best[client_id] = qos
        yield from best.items()
