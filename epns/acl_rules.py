"""Integrator topics: ACL rules from the broker's configuration, pure.

The wire contract (``epns.acl``) admits agents and the server to the ``epns/``
topics and to nothing else, so a client that is not an agent (an integrator's
own device, an MQTT conformance suite) has no topic it may use. Rules in
``broker.toml`` widen that, in the manner of Mosquitto's ``pattern`` and
``user`` lines::

    [[acl.rules]]
    identities = ["conformance-*"]          # identity names, shell patterns
    access = "readwrite"                    # read | write | readwrite | deny
    topics = ["conformance/#", "site/%c/status"]

The contract stays authoritative for its own namespace: a rule's first topic
level must be a literal other than ``epns`` and not a ``$`` topic, which is
refused when the configuration is loaded, and ``AccessPolicy`` asks the
contract alone about such topics anyway. A client still proves who it is
(``epns.identity``); rules only widen the topics it may use.

The broker decides a subscription once, at SUBSCRIBE, and routes without a
check per message, so a topic filter is allowed only when a read rule
*covers* it (every topic it can match is a topic the rule matches) and no
deny rule *overlaps* it (no topic matched by both). A deny rule wins over any
grant, whatever the order of the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from epns.acl import Action, is_allowed
from epns.identity import Identity
from epns.mqtt.filters import is_valid_filter, is_wildcard
from epns.topics import PREFIX, is_valid_name

__all__ = [
    "AccessPolicy",
    "AclRule",
    "filter_covers",
    "filters_overlap",
]

Access = Literal["read", "write", "readwrite", "deny"]
_ACCESS: tuple[Access, ...] = ("read", "write", "readwrite", "deny")
# Substituted by the client's identity name when they make a whole level
# (Mosquitto's %c and %u: the client id equals the identity in epns).
_SUBSTITUTIONS = ("%c", "%u")
_CONTRACT_LEVEL = PREFIX.split("/", 1)[0]


@dataclass(frozen=True)
class AclRule:
    """One ``[[acl.rules]]`` entry: who, what access, which topics. Outside the
    wire contract's namespace only (``epns/...`` and ``$`` topics are refused)."""

    # Identity names (certificate CN or token subject) as shell patterns
    # (fnmatch, case-sensitive); "*" is every client, the server included.
    identities: tuple[str, ...]
    # read (subscribe, receive retained), write (publish, will), readwrite, or
    # deny (wins over any grant of any rule).
    access: Access
    # MQTT topic filters; %c or %u as a whole level is the client's identity name.
    # The first level must be a literal other than epns and not start with '$'.
    topics: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.access not in _ACCESS:
            raise ValueError(f"access {self.access!r} is not one of {', '.join(_ACCESS)}")
        if not self.identities or not all(self.identities):
            raise ValueError("an acl rule needs at least one non-empty identity pattern")
        if not self.topics:
            raise ValueError("an acl rule needs at least one topic")
        for topic in self.topics:
            check_rule_topic(topic)

    def applies_to(self, name: str) -> bool:
        """True when this rule is about the identity called ``name``."""
        return any(fnmatchcase(name, pattern) for pattern in self.identities)

    def patterns_for(self, name: str) -> tuple[str, ...]:
        """The rule's topics with %c and %u replaced by ``name``."""
        return tuple(_substitute(topic, name) for topic in self.topics)


def check_rule_topic(topic: str) -> None:
    """Raise ValueError, saying why, for a topic a rule may not name."""
    if not is_valid_filter(topic.replace("%c", "x").replace("%u", "x")):
        raise ValueError(f"acl rule topic {topic!r} is not a valid MQTT topic filter "
                         "('#' only as the whole last level, '+' only as a whole level)")
    levels = topic.split("/")
    if any("%" in level and level not in _SUBSTITUTIONS for level in levels):
        raise ValueError(f"acl rule topic {topic!r}: '%' is allowed only as a whole "
                         "%c or %u level")
    first = levels[0]
    if first.startswith("$"):
        raise ValueError(f"acl rule topic {topic!r}: '$' topics are the broker's own")
    if first == _CONTRACT_LEVEL:
        raise ValueError(f"acl rule topic {topic!r} is in the wire contract's namespace "
                         f"({_CONTRACT_LEVEL}/...), which only the contract's ACL decides")
    if first in ("+", "#", *_SUBSTITUTIONS):
        raise ValueError(f"acl rule topic {topic!r} must start with a literal level: "
                         f"a wildcard or a name there could reach {_CONTRACT_LEVEL}/...")


def _substitute(topic: str, name: str) -> str:
    return "/".join(name if level in _SUBSTITUTIONS else level for level in topic.split("/"))


def filter_covers(pattern: str, topic_filter: str) -> bool:
    """True when every topic ``topic_filter`` can match is matched by
    ``pattern`` (both valid filters; a topic name is a filter too)."""
    p_levels, f_levels = pattern.split("/"), topic_filter.split("/")
    for index, level in enumerate(f_levels):
        if index >= len(p_levels):
            return False
        wanted = p_levels[index]
        if wanted == "#":
            return True
        if level == "#":
            # '#' reaches deeper than a narrower level, and matches its parent
            # too: '+/#' covers '#' (no topic has no level), 'a/+/#' not 'a/#'.
            return index == 0 and wanted == "+" and p_levels[1:] == ["#"]
        if wanted != "+" and (level == "+" or level != wanted):
            return False
    # 'a/#' also matches 'a' itself: a pattern one '#' longer still covers.
    return p_levels[len(f_levels):] in ([], ["#"])


def filters_overlap(first: str, second: str) -> bool:
    """True when some topic is matched by both filters."""
    a_levels, b_levels = first.split("/"), second.split("/")
    for index in range(min(len(a_levels), len(b_levels))):
        a, b = a_levels[index], b_levels[index]
        if "#" in (a, b):
            return True
        if "+" not in (a, b) and a != b:
            return False
    rest = a_levels[len(b_levels):] or b_levels[len(a_levels):]
    return rest in ([], ["#"])


def _reserved(topic: str) -> bool:
    """Topics the rules never decide: the contract's, the broker's '$' ones,
    and filters whose first level is a wildcard (they could match both)."""
    first = topic.split("/", 1)[0]
    return first in (_CONTRACT_LEVEL, "+", "#") or first.startswith("$")


_NEEDS: dict[Action, Access] = {Action.SUBSCRIBE: "read", Action.RECEIVE: "read",
                                Action.PUBLISH: "write"}


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The broker's whole ACL: the wire contract, widened by the configured
    rules outside its namespace. Built once from the settings."""

    rules: tuple[AclRule, ...] = ()

    def allows(self, identity: Identity, action: Action, topic: str) -> bool:
        """True when ``identity`` may ``action`` on ``topic`` (a filter for SUBSCRIBE)."""
        if is_allowed(identity, action, topic):
            return True
        if not self.rules or not topic or _reserved(topic):
            return False
        if action is Action.SUBSCRIBE:
            if not is_valid_filter(topic):
                return False
        elif is_wildcard(topic):
            return False
        return self._rules_allow(identity.name, _NEEDS[action], topic)

    def _rules_allow(self, name: str, needed: Access, topic: str) -> bool:
        # A name with '/', '+' or '#' would change the shape of a %c pattern
        # (Mosquitto skips such patterns). Proven names never have them, but
        # the rules do not rely on it.
        if not is_valid_name(name):
            return False
        granted = False
        for rule in self.rules:
            if not rule.applies_to(name):
                continue
            patterns = rule.patterns_for(name)
            if rule.access == "deny":
                if any(filters_overlap(pattern, topic) for pattern in patterns):
                    return False
            elif rule.access in (needed, "readwrite") and not granted:
                granted = any(filter_covers(pattern, topic) for pattern in patterns)
        return granted
