"""Topic names of the wire contract, and the names allowed inside them.

All topics live under ``epns/v1``. Per agent there is a command topic (server to
agent), an event topic (agent to server) and a retained presence topic. A wake-up
for everybody or for a group is one publish to a fan-out topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from epns.errors import TopicError

__all__ = [
    "ALL_CMD",
    "SERVER_NAME",
    "AgentChannel",
    "AgentTopic",
    "agent_cmd",
    "agent_evt",
    "agent_presence",
    "agent_topic",
    "check_agent_id",
    "check_name",
    "filter_matches",
    "group_cmd",
    "is_valid_name",
    "parse_agent_topic",
    "parse_group_cmd",
]

PREFIX = "epns/v1"
ALL_CMD = f"{PREFIX}/all/cmd"

# Agent ids and group names become one topic level and a certificate CN: no
# slashes, no wildcards, no leading '$', nothing a shell or a log would mangle.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AgentChannel(StrEnum):
    """The three per-agent topics."""

    CMD = "cmd"
    EVT = "evt"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class AgentTopic:
    """A parsed ``epns/v1/agents/{agent_id}/{channel}`` topic."""

    agent_id: str
    channel: AgentChannel


def is_valid_name(name: str) -> bool:
    """True when ``name`` may be used as an agent id or a group name."""
    return _NAME.fullmatch(name) is not None


def check_name(name: str, what: str = "agent id") -> str:
    """Return ``name`` unchanged, or raise TopicError saying why it is refused."""
    if not is_valid_name(name):
        raise TopicError(
            f"{what} {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


# The management server's MQTT client id and certificate CN. Brokers that
# identify by CN alone (Mosquitto) would take an agent of this name for the
# server, so no agent may have it.
SERVER_NAME = "epns-server"


def check_agent_id(agent_id: str) -> str:
    """``check_name`` for a new agent's id, which may not be a reserved name."""
    check_name(agent_id)
    if agent_id.lower() == SERVER_NAME:
        raise TopicError(f"agent id {agent_id!r} is reserved for the management server; "
                         "choose another")
    return agent_id


def agent_topic(agent_id: str, channel: AgentChannel) -> str:
    """The topic of one agent's channel."""
    return f"{PREFIX}/agents/{check_name(agent_id)}/{channel.value}"


def agent_cmd(agent_id: str) -> str:
    """Server to agent: commands for this agent only."""
    return agent_topic(agent_id, AgentChannel.CMD)


def agent_evt(agent_id: str) -> str:
    """Agent to server: acks and results."""
    return agent_topic(agent_id, AgentChannel.EVT)


def agent_presence(agent_id: str) -> str:
    """Retained birth and last-will of this agent."""
    return agent_topic(agent_id, AgentChannel.PRESENCE)


def group_cmd(group: str) -> str:
    """Fan-out command topic of a group."""
    return f"{PREFIX}/groups/{check_name(group, 'group name')}/cmd"


def parse_agent_topic(topic: str) -> AgentTopic | None:
    """Parse a concrete per-agent topic; None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "epns" or parts[1] != "v1" or parts[2] != "agents":
        return None
    agent_id, channel = parts[3], parts[4]
    if not is_valid_name(agent_id):
        return None
    try:
        return AgentTopic(agent_id, AgentChannel(channel))
    except ValueError:
        return None


def parse_group_cmd(topic: str) -> str | None:
    """The group name of a group command topic; None for anything else."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:3] == ["epns", "v1", "groups"] and parts[4] == "cmd":
        return parts[3] if is_valid_name(parts[3]) else None
    return None


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 topic-filter matching (section 4.7), '$' topics included."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels):
            return False
        if level not in ("+", t_levels[index]):
            return False
    return len(f_levels) == len(t_levels)
