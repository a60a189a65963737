"""The pure parts of scale-out: the NATS accounts block and the server's
broker address list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epns import nats_config
from epns.errors import ConfigError, EPNSError
from epns.server_config import load_server_settings
from server_push import certs_cli


def _accounts(text: str) -> dict[str, object]:
    assert text.startswith("accounts ")
    block: dict[str, object] = json.loads(text.removeprefix("accounts "))
    return block


def test_agents_get_their_own_topics_and_the_server_the_rest() -> None:
    block = _accounts(nats_config.render_accounts(["b2", "a1", "a1"]))
    account = block[nats_config.ACCOUNT]
    assert isinstance(account, dict)
    assert account["jetstream"] == "enabled"
    users = {user["user"]: user for user in account["users"]}
    assert list(users) == ["OU=epns-server,CN=epns-server", "OU=epns-agent,CN=a1",
                           "OU=epns-agent,CN=b2"]
    a1 = users["OU=epns-agent,CN=a1"]["permissions"]
    assert a1["publish"]["allow"] == ["epns.v1.agents.a1.evt", "epns.v1.agents.a1.presence"]
    assert a1["subscribe"]["allow"] == ["epns.v1.agents.a1.cmd", "epns.v1.all.cmd",
                                        "epns.v1.groups.*.cmd", "$MQTT.sub.>"]
    server = users["OU=epns-server,CN=epns-server"]["permissions"]
    assert "epns.v1.agents.*.cmd" in server["publish"]["allow"]
    assert "epns.v1.agents.*.evt" in server["subscribe"]["allow"]
    assert all(user["allowed_connection_types"] == ["MQTT"] for user in users.values())


@pytest.mark.parametrize("agent_id", ["a.b", "bad/id", "+"])
def test_ids_nats_cannot_carry_are_refused(agent_id: str) -> None:
    with pytest.raises(EPNSError):
        nats_config.render_accounts([agent_id])


def test_the_server_tries_its_fallback_brokers_after_the_first() -> None:
    env = {"EPNS_SERVER_MQTT__HOST": "127.0.0.9", "EPNS_SERVER_MQTT__PORT": "8883",
           "EPNS_SERVER_MQTT__FALLBACKS": "127.0.0.1:4001,[::1]:4002"}
    settings = load_server_settings(None, env)
    assert settings.mqtt.addresses() == (("127.0.0.9", 8883), ("127.0.0.1", 4001),
                                         ("::1", 4002))
    assert load_server_settings(None, {}).mqtt.addresses() == (("127.0.0.1", 8883),)


@pytest.mark.parametrize("address", ["127.0.0.1", "host:", ":80", "host:99999"])
def test_a_fallback_must_be_host_and_port(address: str) -> None:
    with pytest.raises(ConfigError, match="fallbacks"):
        load_server_settings(None, {"EPNS_SERVER_MQTT__FALLBACKS": address})


def test_epns_certs_prints_the_block_for_ids_given_and_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "agents.txt"
    listing.write_text("b2\n\n  c3  \n")
    assert certs_cli.main(["nats-accounts", "a1", "--file", str(listing)]) == 0
    users = _accounts(capsys.readouterr().out)[nats_config.ACCOUNT]["users"]  # type: ignore[index]
    assert [u["user"] for u in users] == ["OU=epns-server,CN=epns-server", "OU=epns-agent,CN=a1",
                                          "OU=epns-agent,CN=b2", "OU=epns-agent,CN=c3"]
    assert certs_cli.main(["nats-accounts", "a.1"]) == 2
    assert "'.'" in capsys.readouterr().err
