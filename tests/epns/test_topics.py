"""epns.topics: names, topic builders, parsers and MQTT filter matching."""

from __future__ import annotations

import pytest

from epns import topics
from epns.errors import TopicError
from epns.topics import AgentChannel, AgentTopic


@pytest.mark.parametrize(
    "name",
    ["a", "agent-1", "laptop.0042", "A_b-c.d", "0start", "x" * 64, "Z9"],
)
def test_valid_names(name: str) -> None:
    assert topics.is_valid_name(name)
    assert topics.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 65,
        "-leading-dash",
        ".leading-dot",
        "_leading-underscore",
        "$SYS",
        "a/b",
        "+",
        "#",
        "agent+1",
        "agent#1",
        "with space",
        "tab\there",
        "new\nline",
        "ümlaut",
        "a:b",
        "trailing\n",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not topics.is_valid_name(name)
    with pytest.raises(TopicError, match="is not allowed"):
        topics.check_name(name)


def test_check_name_mentions_what_was_refused() -> None:
    with pytest.raises(TopicError, match=r"^group name 'a/b' is not allowed"):
        topics.check_name("a/b", "group name")


def test_builders() -> None:
    assert topics.ALL_CMD == "epns/v1/all/cmd"
    assert topics.agent_cmd("agent-1") == "epns/v1/agents/agent-1/cmd"
    assert topics.agent_evt("agent-1") == "epns/v1/agents/agent-1/evt"
    assert topics.agent_presence("agent-1") == "epns/v1/agents/agent-1/presence"
    assert topics.agent_topic("a", AgentChannel.EVT) == "epns/v1/agents/a/evt"
    assert topics.group_cmd("floor-2") == "epns/v1/groups/floor-2/cmd"


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "$x"])
def test_builders_refuse_bad_names(bad: str) -> None:
    with pytest.raises(TopicError, match="agent id"):
        topics.agent_cmd(bad)
    with pytest.raises(TopicError, match="agent id"):
        topics.agent_evt(bad)
    with pytest.raises(TopicError, match="agent id"):
        topics.agent_presence(bad)
    with pytest.raises(TopicError, match="group name"):
        topics.group_cmd(bad)


@pytest.mark.parametrize("channel", list(AgentChannel))
def test_parse_agent_topic_round_trip(channel: AgentChannel) -> None:
    topic = topics.agent_topic("agent-1", channel)
    assert topics.parse_agent_topic(topic) == AgentTopic("agent-1", channel)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "epns/v1/agents/agent-1",
        "epns/v1/agents/agent-1/cmd/extra",
        "epns/v1/agents/agent-1/other",
        "epns/v1/agents/agent-1/CMD",
        "epns/v2/agents/agent-1/cmd",
        "EPNS/v1/agents/agent-1/cmd",
        "epns/v1/agent/agent-1/cmd",
        "epns/v1/groups/agent-1/cmd",
        "epns/v1/agents/+/cmd",
        "epns/v1/agents/#/cmd",
        "epns/v1/agents//cmd",
        "epns/v1/agents/agent-1/#",
        "epns/v1/agents/agent-1/+",
        "/epns/v1/agents/agent-1/cmd",
        "epns/v1/all/cmd",
    ],
)
def test_parse_agent_topic_rejects(topic: str) -> None:
    assert topics.parse_agent_topic(topic) is None


def test_parse_group_cmd() -> None:
    assert topics.parse_group_cmd("epns/v1/groups/floor-2/cmd") == "floor-2"
    assert topics.parse_group_cmd(topics.group_cmd("g")) == "g"


@pytest.mark.parametrize(
    "topic",
    [
        "epns/v1/groups/+/cmd",
        "epns/v1/groups/#/cmd",
        "epns/v1/groups//cmd",
        "epns/v1/groups/g/evt",
        "epns/v1/groups/g/cmd/x",
        "epns/v1/groups/g",
        "epns/v2/groups/g/cmd",
        "epns/v1/agents/g/cmd",
        "epns/v1/all/cmd",
        "",
    ],
)
def test_parse_group_cmd_rejects(topic: str) -> None:
    assert topics.parse_group_cmd(topic) is None


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        # exact
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b/d", False),
        # single-level wildcard
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/x/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/", True),
        ("+/+", "/x", True),
        ("+", "a", True),
        ("+", "a/b", False),
        ("epns/v1/agents/+/evt", "epns/v1/agents/agent-1/evt", True),
        ("epns/v1/agents/+/evt", "epns/v1/agents/agent-1/cmd", False),
        # multi-level wildcard, including the parent level (4.7.1.2)
        ("#", "a", True),
        ("#", "a/b/c", True),
        ("#", "/", True),
        ("a/#", "a", True),
        ("a/#", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "b/a", False),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a", False),
        # case sensitive
        ("A/b", "a/b", False),
        # '$' topics are not matched by a leading wildcard (4.7.2)
        ("#", "$SYS/broker/load", False),
        ("+/broker/load", "$SYS/broker/load", False),
        ("+", "$SYS", False),
        ("$SYS/#", "$SYS/broker/load", True),
        ("$SYS/+/load", "$SYS/broker/load", True),
        ("$SYS/broker/load", "$SYS/broker/load", True),
        # '$' inside a later level is an ordinary character
        ("a/#", "a/$x", True),
        ("a/+", "a/$x", True),
    ],
)
def test_filter_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topics.filter_matches(topic_filter, topic) is expected
