"""The access rules of the wire contract, as one pure function.

- An agent subscribes only to its own ``cmd`` topic and to the fan-out topics
  (``epns/v1/all/cmd`` and ``epns/v1/groups/{group}/cmd``), and publishes only to
  its own ``evt`` and ``presence`` topics.
- Only the server role publishes commands; it subscribes to events and presence.
- Wildcards are allowed to the server only, and only in the agent-id level of
  the event and presence topics. ``#``, ``+`` probing and ``$SYS`` are denied.
- A retained message is delivered only when the receiver could subscribe to its
  concrete topic (``Action.RECEIVE``).
"""

from __future__ import annotations

from enum import StrEnum

from epns.identity import Identity, Role
from epns.topics import ALL_CMD, AgentChannel, is_valid_name, parse_agent_topic, parse_group_cmd

__all__ = ["Action", "is_allowed"]


class Action(StrEnum):
    """What a client wants to do with a topic or topic filter."""

    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    RECEIVE = "receive"


_SERVER_READS = (AgentChannel.EVT.value, AgentChannel.PRESENCE.value)


def is_allowed(identity: Identity, action: Action, topic: str) -> bool:
    """True when ``identity`` may ``action`` on ``topic`` (a filter for SUBSCRIBE)."""
    if not topic or topic.startswith("$"):
        return False
    if identity.role is Role.SERVER:
        return _server_allowed(action, topic)
    return _agent_allowed(identity.name, action, topic)


def _agent_allowed(agent_id: str, action: Action, topic: str) -> bool:
    if action is Action.PUBLISH:
        parsed = parse_agent_topic(topic)
        return (
            parsed is not None
            and parsed.agent_id == agent_id
            and parsed.channel in (AgentChannel.EVT, AgentChannel.PRESENCE)
        )
    # SUBSCRIBE and RECEIVE: wildcard characters never match a parsed name, so a
    # filter containing them is denied here without a special case.
    if topic == ALL_CMD or parse_group_cmd(topic) is not None:
        return True
    parsed = parse_agent_topic(topic)
    return parsed is not None and parsed.agent_id == agent_id and parsed.channel is AgentChannel.CMD


def _server_allowed(action: Action, topic: str) -> bool:
    if action is Action.PUBLISH:
        parsed = parse_agent_topic(topic)
        if parsed is not None:
            return parsed.channel is AgentChannel.CMD
        return topic == ALL_CMD or parse_group_cmd(topic) is not None
    levels = topic.split("/")
    return (
        len(levels) == 5
        and levels[:3] == ["epns", "v1", "agents"]
        and (levels[3] == "+" or is_valid_name(levels[3]))
        and levels[4] in _SERVER_READS
    )
