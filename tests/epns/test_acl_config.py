"""epns.acl_rules: integrator topics from the broker's configuration."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from epns.acl import Action
from epns.acl_rules import AccessPolicy, AclRule, filter_covers, filters_overlap
from epns.broker_config import load_broker_settings
from epns.errors import ConfigError
from epns.identity import Identity, Method, Role
from epns.mqtt.filters import is_valid_filter
from epns.topics import filter_matches

CONFORMANCE = Identity("conformance-1", Role.AGENT, Method.CERTIFICATE, serial="1")
AGENT = Identity("agent-1", Role.AGENT, Method.CERTIFICATE, serial="2")
OTHER = Identity("agent-2", Role.AGENT, Method.TOKEN, token_id="t")
SERVER = Identity("epns-server", Role.SERVER, Method.CERTIFICATE, serial="3")

SUITE = AccessPolicy((AclRule(("conformance-*",), "readwrite", ("conformance/#",)),))


# --- filter algebra, against brute force ------------------------------------------

def _filters() -> list[str]:
    """Every valid filter of 1-3 levels over {a, +}, and each with a '#' level after."""
    shapes = [list(p) for n in (1, 2, 3) for p in itertools.product(["a", "+"], repeat=n)]
    return ["/".join(s) for s in shapes] + ["#"] + ["/".join([*s, "#"]) for s in shapes]


# Topics deeper than any filter, over a level no filter names ('b'), so a '+'
# or '#' always matches something a literal does not.
TOPICS = ["/".join(p) for n in range(1, 6) for p in itertools.product("ab", repeat=n)]


def test_covers_is_inclusion_of_the_matched_topics() -> None:
    for pattern, topic_filter in itertools.product(_filters(), repeat=2):
        included = all(filter_matches(pattern, t) for t in TOPICS
                       if filter_matches(topic_filter, t))
        assert filter_covers(pattern, topic_filter) is included, (pattern, topic_filter)


def test_overlap_is_a_topic_matched_by_both() -> None:
    for first, second in itertools.product(_filters(), repeat=2):
        shared = any(filter_matches(first, t) and filter_matches(second, t) for t in TOPICS)
        assert filters_overlap(first, second) is shared, (first, second)


@pytest.mark.parametrize("topic_filter", ["a", "a/b", "a/+/c", "a/#", "#", "+", "/", "a//b",
                                          "+/+", "a/+/#"])
def test_valid_filters(topic_filter: str) -> None:
    assert is_valid_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "a#", "a/b#", "a+", "a/+b", "##",
                                          "a/\0", "x" * 65_536])
def test_invalid_filters(topic_filter: str) -> None:
    assert not is_valid_filter(topic_filter)


# --- the policy ----------------------------------------------------------------------

@pytest.mark.parametrize(("action", "topic"), [
    (Action.SUBSCRIBE, "conformance/#"),
    (Action.SUBSCRIBE, "conformance"),
    (Action.SUBSCRIBE, "conformance/a/+/b"),
    (Action.SUBSCRIBE, "conformance/+"),
    (Action.PUBLISH, "conformance/x/y"),
    (Action.RECEIVE, "conformance/retained"),
])
def test_a_rule_admits_its_identity_to_its_topics(action: Action, topic: str) -> None:
    assert SUITE.allows(CONFORMANCE, action, topic)


@pytest.mark.parametrize(("action", "topic"), [
    (Action.SUBSCRIBE, "#"),
    (Action.SUBSCRIBE, "+/x"),
    (Action.SUBSCRIBE, "+"),
    (Action.SUBSCRIBE, "conformance2/x"),
    (Action.SUBSCRIBE, "conformance/#/x"),
    (Action.SUBSCRIBE, "$SYS/#"),
    (Action.SUBSCRIBE, "epns/#"),
    (Action.SUBSCRIBE, "epns/v1/agents/+/cmd"),
    (Action.SUBSCRIBE, ""),
    (Action.PUBLISH, "conformance/+"),
    (Action.PUBLISH, "conformance/#"),
    (Action.PUBLISH, "epns/v1/agents/agent-1/cmd"),
    (Action.PUBLISH, "epns/v1/all/cmd"),
    (Action.PUBLISH, "$SYS/x"),
    (Action.RECEIVE, "epns/v1/agents/agent-1/presence"),
])
def test_a_rule_admits_nothing_else(action: Action, topic: str) -> None:
    assert not SUITE.allows(CONFORMANCE, action, topic)


def test_a_rule_is_about_the_identities_it_names() -> None:
    assert not SUITE.allows(AGENT, Action.PUBLISH, "conformance/x")
    assert not SUITE.allows(SERVER, Action.SUBSCRIBE, "conformance/#")


def test_the_contract_is_unchanged_for_everybody() -> None:
    everybody = AccessPolicy((AclRule(("*",), "readwrite", ("site/#",)),))
    for policy in (AccessPolicy(), SUITE, everybody):
        assert policy.allows(AGENT, Action.SUBSCRIBE, "epns/v1/agents/agent-1/cmd")
        assert policy.allows(AGENT, Action.PUBLISH, "epns/v1/agents/agent-1/evt")
        assert not policy.allows(AGENT, Action.SUBSCRIBE, "epns/v1/agents/agent-2/cmd")
        assert not policy.allows(AGENT, Action.PUBLISH, "epns/v1/agents/agent-2/cmd")
        assert policy.allows(SERVER, Action.PUBLISH, "epns/v1/agents/agent-2/cmd")
        assert policy.allows(SERVER, Action.SUBSCRIBE, "epns/v1/agents/+/evt")
    assert everybody.allows(SERVER, Action.SUBSCRIBE, "site/#")
    assert not AccessPolicy().allows(AGENT, Action.PUBLISH, "site/x")


def test_client_id_substitution_is_one_level_of_ones_own() -> None:
    policy = AccessPolicy((AclRule(("*",), "readwrite", ("site/%c/#",)),
                           AclRule(("*",), "read", ("site/%u/config",))))
    assert policy.allows(AGENT, Action.PUBLISH, "site/agent-1/status")
    assert policy.allows(OTHER, Action.PUBLISH, "site/agent-2/status")
    assert not policy.allows(AGENT, Action.PUBLISH, "site/agent-2/status")
    assert not policy.allows(AGENT, Action.SUBSCRIBE, "site/+/status")
    assert policy.allows(AGENT, Action.SUBSCRIBE, "site/agent-1/+")


def test_read_and_write_are_separate() -> None:
    policy = AccessPolicy((AclRule(("*",), "read", ("feed/#",)),
                           AclRule(("*",), "write", ("drop/#",))))
    assert policy.allows(AGENT, Action.SUBSCRIBE, "feed/#")
    assert policy.allows(AGENT, Action.RECEIVE, "feed/x")
    assert not policy.allows(AGENT, Action.PUBLISH, "feed/x")
    assert policy.allows(AGENT, Action.PUBLISH, "drop/x")
    assert not policy.allows(AGENT, Action.SUBSCRIBE, "drop/x")
    assert not policy.allows(AGENT, Action.RECEIVE, "drop/x")


@pytest.mark.parametrize("deny_first", [True, False])
def test_deny_wins_whatever_the_order(deny_first: bool) -> None:
    grant = AclRule(("*",), "readwrite", ("site/#",))
    deny = AclRule(("agent-*",), "deny", ("site/secret/#",))
    policy = AccessPolicy((deny, grant) if deny_first else (grant, deny))
    assert policy.allows(AGENT, Action.PUBLISH, "site/open")
    assert not policy.allows(AGENT, Action.PUBLISH, "site/secret/x")
    assert not policy.allows(AGENT, Action.RECEIVE, "site/secret")
    # The broker decides a subscription once: one that could receive a
    # denied topic is refused whole.
    assert not policy.allows(AGENT, Action.SUBSCRIBE, "site/#")
    assert not policy.allows(AGENT, Action.SUBSCRIBE, "site/+/x")
    assert policy.allows(AGENT, Action.SUBSCRIBE, "site/open/#")
    assert policy.allows(SERVER, Action.SUBSCRIBE, "site/#")


def test_a_name_that_could_reshape_a_pattern_gets_no_rule() -> None:
    odd = Identity("a/+", Role.AGENT, Method.TOKEN, token_id="t")
    policy = AccessPolicy((AclRule(("*",), "readwrite", ("site/%c/#",)),))
    assert not policy.allows(odd, Action.SUBSCRIBE, "site/a/+/#")


# --- rules refused when the configuration is loaded ------------------------------------

@pytest.mark.parametrize(("topic", "why"), [
    ("epns/#", "wire contract's namespace"),
    ("epns/v1/agents/%c/cmd", "wire contract's namespace"),
    ("epns", "wire contract's namespace"),
    ("$SYS/#", "'[$]' topics"),
    ("$share/g/x", "'[$]' topics"),
    ("#", "literal level"),
    ("+/status", "literal level"),
    ("%c/status", "literal level"),
    ("site/%x", "whole %c or %u level"),
    ("site/a%c", "whole %c or %u level"),
    ("site/#/x", "not a valid MQTT topic filter"),
    ("site/a+", "not a valid MQTT topic filter"),
    ("", "not a valid MQTT topic filter"),
])
def test_a_rule_may_not_touch_the_contract_or_be_malformed(topic: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        AclRule(("*",), "readwrite", (topic,))


def test_a_rule_names_someone_and_something() -> None:
    with pytest.raises(ValueError, match="identity"):
        AclRule((), "read", ("site/#",))
    with pytest.raises(ValueError, match="identity"):
        AclRule(("",), "read", ("site/#",))
    with pytest.raises(ValueError, match="topic"):
        AclRule(("*",), "read", ())
    with pytest.raises(ValueError, match="access"):
        AclRule(("*",), "all", ("site/#",))  # type: ignore[arg-type]


def test_rules_load_from_broker_toml(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('[[acl.rules]]\nidentities = ["conformance-*"]\naccess = "readwrite"\n'
                    'topics = ["conformance/#"]\n\n'
                    '[[acl.rules]]\nidentities = ["*"]\naccess = "deny"\n'
                    'topics = ["conformance/secret"]\n')
    rules = load_broker_settings(path, {}).acl.rules
    assert rules == (AclRule(("conformance-*",), "readwrite", ("conformance/#",)),
                     AclRule(("*",), "deny", ("conformance/secret",)))
    assert load_broker_settings(None, {}).acl.rules == ()


def test_rules_load_from_the_environment_as_json() -> None:
    env = {"EPNS_BROKER_ACL__RULES":
           '[{"identities": ["x-*"], "access": "write", "topics": ["x/%c"]}]'}
    assert load_broker_settings(None, env).acl.rules == (AclRule(("x-*",), "write", ("x/%c",)),)


@pytest.mark.parametrize(("rules", "message"), [
    ('[{"identities": ["*"], "access": "read", "topics": ["ok/#"]},'
     ' {"identities": ["*"], "access": "read", "topics": ["epns/#"]}]',
     r"acl: rules\[1\]: acl rule topic 'epns/#' is in the wire contract's namespace"),
    ('[{"identities": ["*"], "access": "rw", "topics": ["ok"]}]',
     r"rules\[0\]: access: 'rw' is not one of"),
    ('[{"identities": ["*"], "access": "read", "topics": ["$SYS/#"]}]', "'\\$' topics"),
    ('[{"identities": ["*"], "access": "read", "topic": ["ok"]}]', "unknown key 'topic'"),
    ("conformance/#", "expected a JSON list of objects"),
    ('{"identities": ["*"]}', "expected a JSON list of objects"),
])
def test_a_bad_rule_is_a_config_error_naming_it(rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_broker_settings(None, {"EPNS_BROKER_ACL__RULES": rules})
