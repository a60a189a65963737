"""epns.agent_config: the agent's TOML + env settings, proxy from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from epns.agent_config import load_agent_settings
from epns.errors import ConfigError, EPNSError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    settings = load_agent_settings(write(tmp_path, '[identity]\nagent_id = "a1"\n'), {})
    assert settings.broker.ports == (8883, 443)
    assert settings.sync.interval == 600.0
    assert settings.keepalive.primary == 300
    assert settings.keepalive.proxy < settings.keepalive.fallback < settings.keepalive.primary
    assert settings.identity.cert == tmp_path / "certs/agent.crt"  # relative to the file
    assert settings.state_dir == tmp_path / "state"


def test_https_proxy_and_no_proxy_come_from_the_environment(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n')
    settings = load_agent_settings(path, {"HTTPS_PROXY": "http://u:p@127.0.0.1:3128",
                                          "NO_PROXY": "localhost, .corp.example"})
    assert settings.proxy.url == "http://u:p@127.0.0.1:3128"
    assert settings.proxy.no_proxy == ("localhost", ".corp.example")


def test_an_explicit_proxy_wins_over_the_environment(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n[proxy]\nurl = "http://p:1"\n')
    settings = load_agent_settings(path, {"HTTPS_PROXY": "http://other:2"})
    assert settings.proxy.url == "http://p:1"


def test_use_env_false_ignores_https_proxy(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n[proxy]\nuse_env = false\n')
    assert load_agent_settings(path, {"HTTPS_PROXY": "http://p:1"}).proxy.url is None


def test_env_overrides_the_file(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n')
    settings = load_agent_settings(path, {"EPNS_AGENT_BROKER__PORTS": "9883,8443",
                                          "EPNS_AGENT_SYNC__FETCH": "yes"})
    assert settings.broker.ports == (9883, 8443)
    assert settings.sync.fetch is True


@pytest.mark.parametrize(("text", "message"), [
    ("[identity]\n", "agent_id is required"),
    ('[identity]\nagent_id = "a/1"\n', "agent id"),
    ('[identity]\nagent_id = "a1"\n[broker]\nports = []\n', "at least one port"),
    ('[identity]\nagent_id = "a1"\n[proxy]\nurl = "socks5://h:1"\n', "http://"),
    ('[identity]\nagent_id = "a1"\n[sync]\naction = "command"\n', "sync.command"),
    ('[identity]\nagent_id = "a1"\n[timeouts]\ntls_handshake = 0\n', "positive"),
    ('[identity]\nagent_id = "a1"\n[keepalive]\nproxy = 1\n', "between 5"),
    ('[identity]\nagent_id = "a1"\n[reconnect]\nbase = 5\ncap = 1\n', "base <= cap"),
])
def test_bad_settings_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(EPNSError, match=message):
        load_agent_settings(write(tmp_path, text), {})


def test_a_bad_https_proxy_names_the_variable(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n')
    with pytest.raises(ConfigError, match="HTTPS_PROXY"):
        load_agent_settings(path, {"HTTPS_PROXY": "socks5://h:1"})


def test_a_certificate_without_its_key_is_refused(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n')
    with pytest.raises(EPNSError, match="go together"):
        load_agent_settings(path, {"EPNS_AGENT_IDENTITY__KEY": ""})


def test_no_identity_at_all_is_refused(tmp_path):
    path = write(tmp_path, '[identity]\nagent_id = "a1"\n')
    with pytest.raises(EPNSError, match="cert and key, or a token_file"):
        load_agent_settings(path, {"EPNS_AGENT_IDENTITY__KEY": "",
                                   "EPNS_AGENT_IDENTITY__CERT": ""})
