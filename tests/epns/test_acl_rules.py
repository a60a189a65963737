"""epns.acl: the full access matrix of the wire contract."""

from __future__ import annotations

import pytest

from epns.acl import Action, is_allowed
from epns.identity import Identity, Method, Role

AGENT = Identity("agent-1", Role.AGENT, Method.CERTIFICATE, serial="1f")
TOKEN_AGENT = Identity("agent-1", Role.AGENT, Method.TOKEN, token_id="abcd")
SERVER = Identity("epns-server", Role.SERVER, Method.CERTIFICATE, serial="2e")

READS = (Action.SUBSCRIBE, Action.RECEIVE)

# --- agent: subscribe / receive ---------------------------------------------------

AGENT_MAY_READ = [
    "epns/v1/agents/agent-1/cmd",
    "epns/v1/all/cmd",
    "epns/v1/groups/floor-2/cmd",
    "epns/v1/groups/g/cmd",
]

AGENT_MAY_NOT_READ = [
    "epns/v1/agents/agent-2/cmd",
    "epns/v1/agents/agent-1/evt",
    "epns/v1/agents/agent-1/presence",
    "epns/v1/agents/agent-2/evt",
    "epns/v1/agents/agent-2/presence",
    "#",
    "+",
    "epns/#",
    "epns/v1/#",
    "epns/v1/agents/#",
    "epns/v1/agents/+/cmd",
    "epns/v1/agents/+/evt",
    "epns/v1/agents/+/presence",
    "epns/v1/agents/agent-1/+",
    "epns/v1/agents/agent-1/#",
    "epns/v1/groups/+/cmd",
    "epns/v1/groups/#",
    "epns/v1/+/cmd",
    "+/v1/all/cmd",
    "$SYS/#",
    "$SYS/broker/clients/connected",
    "$share/g/epns/v1/all/cmd",
    "",
    "epns/v1/all/cmd/extra",
    "epns/v1/agents/agent-1/cmd/extra",
    "epns/v2/agents/agent-1/cmd",
    "epns/v1/agents/AGENT-1/cmd",
    "epns/v1/agents//cmd",
    "epns/v1/groups//cmd",
    "epns/v1/agents/#/cmd",
]


@pytest.mark.parametrize("identity", [AGENT, TOKEN_AGENT], ids=["cert", "token"])
@pytest.mark.parametrize("action", READS)
@pytest.mark.parametrize("topic", AGENT_MAY_READ)
def test_agent_may_read(identity: Identity, action: Action, topic: str) -> None:
    assert is_allowed(identity, action, topic) is True


@pytest.mark.parametrize("identity", [AGENT, TOKEN_AGENT], ids=["cert", "token"])
@pytest.mark.parametrize("action", READS)
@pytest.mark.parametrize("topic", AGENT_MAY_NOT_READ)
def test_agent_may_not_read(identity: Identity, action: Action, topic: str) -> None:
    assert is_allowed(identity, action, topic) is False


# --- agent: publish ---------------------------------------------------------------

AGENT_MAY_PUBLISH = [
    "epns/v1/agents/agent-1/evt",
    "epns/v1/agents/agent-1/presence",
]

AGENT_MAY_NOT_PUBLISH = [
    "epns/v1/agents/agent-1/cmd",
    "epns/v1/agents/agent-2/cmd",
    "epns/v1/agents/agent-2/evt",
    "epns/v1/agents/agent-2/presence",
    "epns/v1/all/cmd",
    "epns/v1/groups/g/cmd",
    "epns/v1/agents/+/evt",
    "epns/v1/agents/agent-1/#",
    "#",
    "$SYS/broker/load",
    "",
    "epns/v1/agents/agent-1/evt/extra",
]


@pytest.mark.parametrize("identity", [AGENT, TOKEN_AGENT], ids=["cert", "token"])
@pytest.mark.parametrize("topic", AGENT_MAY_PUBLISH)
def test_agent_may_publish(identity: Identity, topic: str) -> None:
    assert is_allowed(identity, Action.PUBLISH, topic) is True


@pytest.mark.parametrize("identity", [AGENT, TOKEN_AGENT], ids=["cert", "token"])
@pytest.mark.parametrize("topic", AGENT_MAY_NOT_PUBLISH)
def test_agent_may_not_publish(identity: Identity, topic: str) -> None:
    assert is_allowed(identity, Action.PUBLISH, topic) is False


def test_agent_rules_follow_the_identity_name() -> None:
    other = Identity("agent-2", Role.AGENT, Method.CERTIFICATE)
    assert is_allowed(other, Action.SUBSCRIBE, "epns/v1/agents/agent-2/cmd")
    assert not is_allowed(other, Action.SUBSCRIBE, "epns/v1/agents/agent-1/cmd")
    assert is_allowed(other, Action.PUBLISH, "epns/v1/agents/agent-2/evt")
    assert not is_allowed(other, Action.PUBLISH, "epns/v1/agents/agent-1/evt")


def test_an_agent_named_like_the_server_is_still_an_agent() -> None:
    impostor = Identity("epns-server", Role.AGENT, Method.TOKEN)
    assert not is_allowed(impostor, Action.PUBLISH, "epns/v1/agents/agent-1/cmd")
    assert not is_allowed(impostor, Action.PUBLISH, "epns/v1/all/cmd")
    assert not is_allowed(impostor, Action.SUBSCRIBE, "epns/v1/agents/+/evt")


# --- server -----------------------------------------------------------------------

SERVER_MAY_PUBLISH = [
    "epns/v1/agents/agent-1/cmd",
    "epns/v1/agents/agent-2/cmd",
    "epns/v1/all/cmd",
    "epns/v1/groups/floor-2/cmd",
]

SERVER_MAY_NOT_PUBLISH = [
    "epns/v1/agents/agent-1/evt",
    "epns/v1/agents/agent-1/presence",
    "epns/v1/agents/+/cmd",
    "epns/v1/groups/+/cmd",
    "epns/v1/agents/#",
    "#",
    "$SYS/broker/load",
    "",
    "epns/v1/all/evt",
    "epns/v1/agents/agent-1/cmd/extra",
    "epns/v1/other",
    "some/other/topic",
]

SERVER_MAY_READ = [
    "epns/v1/agents/+/evt",
    "epns/v1/agents/+/presence",
    "epns/v1/agents/agent-1/evt",
    "epns/v1/agents/agent-1/presence",
]

SERVER_MAY_NOT_READ = [
    "#",
    "+",
    "epns/#",
    "epns/v1/#",
    "epns/v1/agents/#",
    "epns/v1/agents/+/#",
    "epns/v1/agents/+/+",
    "epns/v1/agents/agent-1/+",
    "epns/v1/agents/agent-1/#",
    "epns/v1/+/+/evt",
    "epns/v1/agents/+/cmd",
    "epns/v1/agents/agent-1/cmd",
    "epns/v1/all/cmd",
    "epns/v1/groups/g/cmd",
    "epns/v1/agents/a+b/evt",
    "epns/v1/agents/#/evt",
    "epns/v1/agents/+#/evt",
    "epns/v1/agents//evt",
    "epns/v1/agents//presence",
    "epns/v1/agents/$x/evt",
    "$SYS/#",
    "$SYS/broker/load",
    "",
    "epns/v1/agents/+/evt/extra",
]


@pytest.mark.parametrize("topic", SERVER_MAY_PUBLISH)
def test_server_may_publish(topic: str) -> None:
    assert is_allowed(SERVER, Action.PUBLISH, topic) is True


@pytest.mark.parametrize("topic", SERVER_MAY_NOT_PUBLISH)
def test_server_may_not_publish(topic: str) -> None:
    assert is_allowed(SERVER, Action.PUBLISH, topic) is False


@pytest.mark.parametrize("action", READS)
@pytest.mark.parametrize("topic", SERVER_MAY_READ)
def test_server_may_read(action: Action, topic: str) -> None:
    assert is_allowed(SERVER, action, topic) is True


@pytest.mark.parametrize("action", READS)
@pytest.mark.parametrize("topic", SERVER_MAY_NOT_READ)
def test_server_may_not_read(action: Action, topic: str) -> None:
    assert is_allowed(SERVER, action, topic) is False


def test_server_role_does_not_depend_on_its_name() -> None:
    server = Identity("any-name", Role.SERVER, Method.CERTIFICATE)
    assert is_allowed(server, Action.PUBLISH, "epns/v1/agents/agent-1/cmd")
    assert is_allowed(server, Action.SUBSCRIBE, "epns/v1/agents/+/evt")
    # and a server gets none of an agent's rights on a topic named like it
    assert not is_allowed(server, Action.PUBLISH, "epns/v1/agents/any-name/evt")
    assert not is_allowed(server, Action.SUBSCRIBE, "epns/v1/agents/any-name/cmd")
