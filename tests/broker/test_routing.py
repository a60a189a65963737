"""broker.routing: the subscription index and filter validation."""

from __future__ import annotations

import pytest

from broker.routing import SubscriptionIndex
from epns.mqtt.filters import is_valid_filter, is_wildcard

CMD_1 = "epns/v1/agents/agent-1/cmd"
CMD_2 = "epns/v1/agents/agent-2/cmd"
EVT_1 = "epns/v1/agents/agent-1/evt"
ALL = "epns/v1/all/cmd"


def _match(index: SubscriptionIndex, topic: str) -> dict[str, int]:
    pairs = list(index.match(topic))
    result = dict(pairs)
    assert len(result) == len(pairs), f"a client was yielded twice: {pairs}"
    return result


def test_empty_index() -> None:
    index = SubscriptionIndex()
    assert len(index) == 0
    assert _match(index, CMD_1) == {}
    assert index.filters_of("nobody") == {}
    assert index.remove("nobody", CMD_1) is False
    assert index.remove_client("nobody") == 0


def test_exact_subscriptions() -> None:
    index = SubscriptionIndex()
    index.add("agent-1", CMD_1, 1)
    index.add("agent-1", ALL, 0)
    index.add("agent-2", CMD_2, 1)
    index.add("agent-2", ALL, 1)
    assert len(index) == 4
    assert _match(index, CMD_1) == {"agent-1": 1}
    assert _match(index, CMD_2) == {"agent-2": 1}
    assert _match(index, ALL) == {"agent-1": 0, "agent-2": 1}
    assert _match(index, EVT_1) == {}
    assert index.filters_of("agent-1") == {CMD_1: 1, ALL: 0}


def test_filters_of_returns_a_copy() -> None:
    index = SubscriptionIndex()
    index.add("a", CMD_1, 1)
    index.filters_of("a").clear()
    assert index.filters_of("a") == {CMD_1: 1}


def test_add_again_replaces_the_qos() -> None:
    index = SubscriptionIndex()
    index.add("agent-1", CMD_1, 1)
    index.add("agent-1", CMD_1, 0)
    assert len(index) == 1
    assert _match(index, CMD_1) == {"agent-1": 0}
    index.add("server", "epns/v1/agents/+/evt", 0)
    index.add("server", "epns/v1/agents/+/evt", 1)
    assert len(index) == 2
    assert _match(index, EVT_1) == {"server": 1}


def test_wildcard_subscriptions() -> None:
    index = SubscriptionIndex()
    index.add("server", "epns/v1/agents/+/evt", 1)
    index.add("server", "epns/v1/agents/+/presence", 0)
    index.add("monitor", "epns/#", 0)
    assert _match(index, EVT_1) == {"server": 1, "monitor": 0}
    assert _match(index, "epns/v1/agents/agent-9/presence") == {"server": 0, "monitor": 0}
    assert _match(index, CMD_1) == {"monitor": 0}
    assert _match(index, "other/topic") == {}
    assert _match(index, "$SYS/broker/load") == {}


def test_wildcard_and_exact_overlap_yields_each_client_once_at_highest_qos() -> None:
    index = SubscriptionIndex()
    index.add("c", EVT_1, 0)
    index.add("c", "epns/v1/agents/+/evt", 1)
    index.add("c", "epns/#", 0)
    index.add("d", EVT_1, 1)
    index.add("d", "#", 0)
    index.add("e", "epns/v1/agents/agent-1/+", 0)
    assert _match(index, EVT_1) == {"c": 1, "d": 1, "e": 0}
    # the exact subscription alone still works for a topic no wildcard matches
    index.add("f", "x/y", 1)
    assert _match(index, "x/y") == {"f": 1, "d": 0}


def test_remove() -> None:
    index = SubscriptionIndex()
    index.add("a", CMD_1, 0)
    index.add("b", CMD_1, 1)
    index.add("a", "epns/+/all/cmd", 1)
    assert index.remove("a", CMD_1) is True
    assert index.remove("a", CMD_1) is False
    assert len(index) == 2
    assert _match(index, CMD_1) == {"b": 1}
    assert index.remove("a", "epns/+/all/cmd") is True
    assert _match(index, ALL) == {}
    assert index.filters_of("a") == {}
    assert index.remove("b", "never/subscribed") is False
    assert len(index) == 1
    assert index.remove("b", CMD_1) is True
    assert len(index) == 0
    assert _match(index, CMD_1) == {}


def test_remove_qos0_subscription() -> None:
    index = SubscriptionIndex()
    index.add("a", CMD_1, 0)
    assert index.remove("a", CMD_1) is True
    assert len(index) == 0


def test_remove_client() -> None:
    index = SubscriptionIndex()
    index.add("a", CMD_1, 0)
    index.add("a", ALL, 1)
    index.add("a", "epns/v1/agents/+/evt", 1)
    index.add("b", ALL, 0)
    index.add("b", "epns/v1/agents/+/evt", 0)
    assert index.remove_client("a") == 3
    assert index.remove_client("a") == 0
    assert len(index) == 2
    assert index.filters_of("a") == {}
    assert _match(index, ALL) == {"b": 0}
    assert _match(index, EVT_1) == {"b": 0}
    assert _match(index, CMD_1) == {}


def test_resubscribe_after_remove() -> None:
    index = SubscriptionIndex()
    index.add("a", "epns/v1/agents/+/evt", 1)
    index.remove_client("a")
    index.add("a", "epns/v1/agents/+/evt", 0)
    assert _match(index, EVT_1) == {"a": 0}


def test_is_wildcard() -> None:
    assert is_wildcard("a/+/b")
    assert is_wildcard("#")
    assert not is_wildcard(CMD_1)


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "a", "a/b", "a/#", "a/+/b", "+/+", "+/#", "/", "/a", "a/", "$SYS/#",
     "epns/v1/agents/+/evt", "a//b"],
)
def test_valid_filters(topic_filter: str) -> None:
    assert is_valid_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    ["", "a/#/b", "#/a", "a#", "a/b#", "##", "a/#/#", "a+", "+a/b", "a/b+/c", "++", "a/+#"],
)
def test_invalid_filters(topic_filter: str) -> None:
    assert not is_valid_filter(topic_filter)
