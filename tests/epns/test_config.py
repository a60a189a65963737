"""epns.config (generic loader) and epns.broker_config (the broker's schema)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import pytest

from epns import config
from epns.broker_config import (
    ENV_PREFIX,
    BrokerSettings,
    GCSettings,
    IdentitySettings,
    LimitSettings,
    ListenerSettings,
    TLSSettings,
    load_broker_settings,
)
from epns.errors import ConfigError


def _write(tmp_path: Path, text: str, name: str = "broker.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the broker's defaults ----------------------------------------------------------


def test_defaults() -> None:
    settings = load_broker_settings(None, {})
    assert settings == BrokerSettings()
    listeners = settings.listeners
    assert (listeners.primary.port, listeners.primary.transport) == (8883, "mqtts")
    assert (listeners.fallback.port, listeners.fallback.transport) == (443, "mqtts")
    assert (listeners.websocket.port, listeners.websocket.transport) == (8443, "wss")
    assert listeners.websocket.enabled is False
    assert set(listeners.enabled()) == {"primary", "fallback"}
    assert settings.tls == TLSSettings(
        Path("certs/broker.crt"), Path("certs/broker.key"), Path("certs/ca.crt")
    )
    assert settings.identity.server_public_key == Path("certs/signing.pub")
    assert settings.limits.max_inflight == 32
    assert settings.limits.max_connections == 19_000
    assert settings.metrics.host == "127.0.0.1"
    assert (settings.log.level, settings.log.format) == ("info", "text")


def test_env_without_the_prefix_is_ignored() -> None:
    env = {"HOME": "/root", "EPNS_BROKER": "x", "EPNS_BROKER_": "x", "EPNS_AGENT_LOG__LEVEL": "y"}
    assert load_broker_settings(None, env) == BrokerSettings()
    assert ENV_PREFIX == "EPNS_BROKER_"


# --- TOML files ---------------------------------------------------------------------


def test_file_values(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[listeners.primary]
host = "127.0.0.53"
port = 1883

[listeners.websocket]
enabled = true

[limits]
max_connections = 100
connect_rate = 50        # an int for a float field is fine
keepalive_factor = 2.5

[metrics]
enabled = false

[log]
level = "debug"
format = "json"
""")
    settings = load_broker_settings(path, {})
    assert settings.listeners.primary == ListenerSettings(port=1883, host="127.0.0.53")
    assert settings.listeners.websocket == ListenerSettings(
        port=8443, transport="wss", enabled=True
    )
    assert settings.limits.max_connections == 100
    assert settings.limits.connect_rate == 50.0
    assert isinstance(settings.limits.connect_rate, float)
    assert settings.limits.keepalive_factor == 2.5
    assert settings.limits.max_inflight == 32  # untouched default
    assert settings.metrics.enabled is False
    assert settings.metrics.port == 9883
    assert (settings.log.level, settings.log.format) == ("debug", "json")


def test_partial_listener_table_keeps_other_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, '[listeners.primary]\nhost = "127.0.0.2"\n')
    settings = load_broker_settings(path, {})
    assert settings.listeners.primary == ListenerSettings(
        port=8883, host="127.0.0.2", transport="mqtts", enabled=True
    )
    # Relative paths, defaults included, are relative to the file.
    assert settings.listeners.fallback == ListenerSettings(
        port=443, http_upstream=path.parent / "state/front.sock")
    assert settings.listeners.websocket.enabled is False


def test_partial_limits_table_keeps_other_defaults(tmp_path: Path) -> None:
    settings = load_broker_settings(_write(tmp_path, "[limits]\nmax_inflight = 4\n"), {})
    assert settings.limits == LimitSettings(max_inflight=4)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_broker_settings(tmp_path / "nope.toml", {})


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_broker_settings(_write(tmp_path, "[limits\nmax = "), {})


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_broker_settings(path, {})


# --- environment overrides ----------------------------------------------------------


def test_env_overrides() -> None:
    settings = load_broker_settings(None, {
        "EPNS_BROKER_LIMITS__MAX_CONNECTIONS": "5",
        "EPNS_BROKER_LISTENERS__PRIMARY__PORT": "1",
        "EPNS_BROKER_LIMITS__CONNECT_RATE": "2.5",
        "EPNS_BROKER_METRICS__HOST": "0.0.0.0",
        "EPNS_BROKER_LOG__FORMAT": "json",
    })
    assert settings.limits.max_connections == 5
    assert settings.limits.connect_rate == 2.5
    assert settings.listeners.primary == ListenerSettings(port=1)
    assert settings.listeners.fallback.port == 443
    assert settings.metrics.host == "0.0.0.0"
    assert settings.log.format == "json"
    assert settings.limits.max_inflight == 32


def test_env_beats_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[limits]\nmax_connections = 100\nmax_queued = 7\n")
    settings = load_broker_settings(path, {"EPNS_BROKER_LIMITS__MAX_CONNECTIONS": "5"})
    assert settings.limits.max_connections == 5
    assert settings.limits.max_queued == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True), ("true", True), ("TRUE", True), ("Yes", True), ("on", True),
        ("0", False), ("false", False), ("False", False), ("no", False), ("OFF", False),
    ],
)
def test_env_bool(text: str, expected: bool) -> None:
    settings = load_broker_settings(None, {"EPNS_BROKER_METRICS__ENABLED": text})
    assert settings.metrics.enabled is expected


@pytest.mark.parametrize("text", ["", "maybe", "2", "enabled", "t"])
def test_env_bad_bool(text: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics: enabled: expected bool"):
        load_broker_settings(None, {"EPNS_BROKER_METRICS__ENABLED": text})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EPNS_BROKER_LIMITS__MAX_CONNECTIONS", "many", "max_connections: expected int"),
        ("EPNS_BROKER_LIMITS__MAX_CONNECTIONS", "5.5", "max_connections: expected int"),
        ("EPNS_BROKER_LIMITS__CONNECT_RATE", "fast", "connect_rate: expected float"),
        ("EPNS_BROKER_LOG__LEVEL", "verbose", "'verbose' is not one of"),
        ("EPNS_BROKER_LISTENERS__PRIMARY__TRANSPORT", "ws", "'ws' is not one of"),
        ("EPNS_BROKER_LIMITS__BOGUS", "1", "unknown key 'bogus'"),
        ("EPNS_BROKER_NOPE", "1", "unknown key 'nope'"),
        ("EPNS_BROKER_LISTENERS__PRIMARY__PORT", "70000", "port 70000 is out of range"),
    ],
)
def test_env_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_broker_settings(None, {name: value})


def test_env_value_where_a_section_is() -> None:
    env = {"EPNS_BROKER_LIMITS": "5", "EPNS_BROKER_LIMITS__MAX_INFLIGHT": "3"}
    with pytest.raises(ConfigError, match="'limits' is not a section"):
        load_broker_settings(None, env)


# --- the garbage collector ---------------------------------------------------------


def test_gc_settings(tmp_path: Path) -> None:
    assert load_broker_settings(None, {}).gc == GCSettings(
        freeze_interval=1.0, full_collection_interval=600.0)
    path = _write(tmp_path, "[gc]\nfreeze_interval = 0\n")
    assert load_broker_settings(path, {}).gc == GCSettings(freeze_interval=0.0)
    env = {"EPNS_BROKER_GC__FREEZE_INTERVAL": "2.5",
           "EPNS_BROKER_GC__FULL_COLLECTION_INTERVAL": "60"}
    assert load_broker_settings(path, env).gc == GCSettings(2.5, 60.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EPNS_BROKER_GC__FREEZE_INTERVAL", "-1", "freeze_interval must not be negative"),
        ("EPNS_BROKER_GC__FREEZE_INTERVAL", "often", "freeze_interval: expected float"),
        ("EPNS_BROKER_GC__FULL_COLLECTION_INTERVAL", "0",
         "full_collection_interval must be positive"),
    ],
)
def test_gc_settings_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_broker_settings(None, {name: value})


# --- what a file may not say --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nmax_conections = 5\n", r"limits: unknown key 'max_conections'"),
        ("[limitz]\nmax_connections = 5\n", r"unknown key 'limitz'"),
        ("[listeners.tertiary]\nport = 1\n", r"listeners: unknown key 'tertiary'"),
        ("[listeners.primary]\nports = 1\n", r"primary: unknown key 'ports'"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_broker_settings(_write(tmp_path, text), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[listeners.primary]\nport = "8883"\n', r"primary: port: expected int, got '8883'"),
        ("[limits]\nmax_inflight = 1.5\n", r"max_inflight: expected int"),
        ("[limits]\nmax_inflight = true\n", r"max_inflight: expected int"),
        ("[limits]\nconnect_rate = true\n", r"connect_rate: expected float"),
        ('[metrics]\nenabled = "yes"\n', r"metrics: enabled: expected bool"),
        ("[metrics]\nhost = 5\n", r"metrics: host: expected str"),
        ("limits = 5\n", r"limits: expected a table"),
        ('[log]\nlevel = "verbose"\n', r"log: level: 'verbose' is not one of"),
        ('[log]\nformat = "xml"\n', r"log: format: 'xml' is not one of"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_broker_settings(_write(tmp_path, text), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[listeners.primary]\nport = 65536\n", "port 65536 is out of range"),
        ("[listeners.fallback]\nport = -1\n", "port -1 is out of range"),
        ("[limits]\nmax_inflight = 0\n", "max_inflight must be at least 1"),
        ("[limits]\nmax_queued = -5\n", "max_queued must be at least 1"),
        ("[limits]\nmax_connections = 0\n", "max_connections must be at least 1"),
        ("[limits]\nconnect_rate = 0\n", "connect_rate must be positive"),
        ("[limits]\nsession_expiry = -1.0\n", "session_expiry must be positive"),
        ("[limits]\nkeepalive_factor = 0.5\n", "keepalive_factor must be at least 1"),
        (
            "[listeners.primary]\nenabled = false\n[listeners.fallback]\nenabled = false\n",
            "at least one listener must be enabled",
        ),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_broker_settings(_write(tmp_path, text), {})


def test_port_bounds_are_inclusive(tmp_path: Path) -> None:
    path = _write(tmp_path, "[listeners.primary]\nport = 0\n[listeners.fallback]\nport = 65535\n")
    settings = load_broker_settings(path, {})
    assert (settings.listeners.primary.port, settings.listeners.fallback.port) == (0, 65535)


def test_only_the_websocket_listener(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[listeners.primary]
enabled = false
[listeners.fallback]
enabled = false
[listeners.websocket]
enabled = true
""")
    assert list(load_broker_settings(path, {}).listeners.enabled()) == ["websocket"]


# --- paths --------------------------------------------------------------------------

_FULL_PATH_TABLES = """
[tls]
cert = "tls/broker.crt"
key = "tls/broker.key"
ca = "/etc/epns/ca.crt"

[identity]
server_public_key = "keys/signing.pub"
revocation_file = "/var/lib/epns/revoked.txt"
revocation_check_interval = 5.0
"""


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    settings = load_broker_settings(_write(conf_dir, _FULL_PATH_TABLES), {})
    assert settings.tls.cert == conf_dir / "tls/broker.crt"
    assert settings.tls.key == conf_dir / "tls/broker.key"
    assert settings.tls.ca == Path("/etc/epns/ca.crt")
    assert settings.identity.server_public_key == conf_dir / "keys/signing.pub"
    assert settings.identity.revocation_file == Path("/var/lib/epns/revoked.txt")
    assert settings.identity.revocation_check_interval == 5.0


def test_default_paths_follow_the_config_file(tmp_path: Path) -> None:
    settings = load_broker_settings(_write(tmp_path, "[limits]\nmax_inflight = 2\n"), {})
    assert settings.tls.cert == tmp_path / "certs/broker.crt"
    assert settings.identity.revocation_file == tmp_path / "certs/revoked.txt"


def test_paths_without_a_file_stay_as_given() -> None:
    settings = load_broker_settings(None, {})
    assert not settings.tls.cert.is_absolute()
    assert settings.tls.cert == Path("certs/broker.crt")


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[tls]\ncert = "my.crt"\n', {}),
        ("[identity]\nrevocation_check_interval = 5.0\n", {}),
        ("", {"EPNS_BROKER_TLS__CERT": "my.crt"}),
        ("", {"EPNS_BROKER_IDENTITY__REVOCATION_CHECK_INTERVAL": "5"}),
    ],
    ids=["file-tls", "file-identity", "env-tls", "env-identity"],
)
def test_partial_path_sections_keep_other_defaults(
    tmp_path: Path, text: str, env: dict[str, str]
) -> None:
    settings = load_broker_settings(_write(tmp_path, text), env)
    assert settings.tls.key == tmp_path / "certs/broker.key"
    assert settings.identity.server_public_key == tmp_path / "certs/signing.pub"
    assert settings.tls.cert in (tmp_path / "my.crt", tmp_path / "certs/broker.crt")


def test_empty_env_disables_the_token_key() -> None:
    settings = load_broker_settings(None, {"EPNS_BROKER_IDENTITY__SERVER_PUBLIC_KEY": ""})
    assert settings.identity.server_public_key is None
    assert settings.identity.revocation_file == Path("certs/revoked.txt")


def test_empty_token_key_in_a_full_env_section() -> None:
    env = {
        "EPNS_BROKER_IDENTITY__SERVER_PUBLIC_KEY": "",
        "EPNS_BROKER_IDENTITY__REVOCATION_FILE": "revoked.txt",
        "EPNS_BROKER_IDENTITY__REVOCATION_CHECK_INTERVAL": "0.5",
    }
    identity = load_broker_settings(None, env).identity
    assert identity == IdentitySettings(None, Path("revoked.txt"), 0.5)


# --- the generic loader -------------------------------------------------------------


@dataclass(frozen=True)
class _Inner:
    a: int = 1
    b: str = "x"


@dataclass(frozen=True)
class _Schema:
    inner: _Inner = field(default_factory=_Inner)
    names: tuple[str, ...] = ()
    ports: tuple[int, ...] = (1,)
    weights: Mapping[str, float] = field(default_factory=dict)
    maybe: int | None = None
    mode: Literal["a", "b"] = "a"
    ratio: float = 1.0
    flag: bool = False
    where: Path = Path("here")


def test_generic_defaults() -> None:
    assert config.load(_Schema, None, {}, "APP_") == _Schema()


def test_generic_file(tmp_path: Path) -> None:
    path = _write(tmp_path, """
names = ["a", "b"]
ports = [1, 2, 3]
maybe = 7
mode = "b"
where = "/x"
[inner]
b = "y"
[weights]
w1 = 1
w2 = 0.5
""", "app.toml")
    loaded = config.load(_Schema, path, {}, "APP_")
    assert loaded.inner == _Inner(a=1, b="y")
    assert loaded.names == ("a", "b")
    assert loaded.ports == (1, 2, 3)
    assert loaded.maybe == 7
    assert loaded.mode == "b"
    assert loaded.where == Path("/x")
    assert isinstance(loaded.weights, MappingProxyType)
    assert dict(loaded.weights) == {"w1": 1.0, "w2": 0.5}
    assert isinstance(loaded.weights["w1"], float)


def test_generic_env() -> None:
    loaded = config.load(_Schema, None, {
        "APP_NAMES": "a, b,,c",
        "APP_PORTS": "80,443",
        "APP_MAYBE": "3",
        "APP_INNER__A": "9",
        "APP_FLAG": "yes",
        "APP_RATIO": "0.25",
        "APP_WHERE": "rel/path",
    }, "APP_")
    assert loaded.names == ("a", "b", "c")
    assert loaded.ports == (80, 443)
    assert loaded.maybe == 3
    assert loaded.inner == _Inner(a=9, b="x")
    assert loaded.flag is True
    assert loaded.ratio == 0.25
    assert loaded.where == Path("rel/path")


def test_generic_empty_env_means_none_for_optional() -> None:
    assert config.load(_Schema, None, {"APP_MAYBE": ""}, "APP_").maybe is None
    assert config.load(_Schema, None, {"APP_NAMES": ""}, "APP_").names == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"names": "a,b"}, "names: expected a list"),
        ({"ports": ["x"]}, "ports: expected int"),
        ({"weights": [1]}, "weights: expected a table"),
        ({"weights": {"w": "heavy"}}, r"weights\.w: expected float"),
        ({"maybe": "3"}, "maybe: expected int"),
        ({"mode": "c"}, "mode: 'c' is not one of 'a', 'b'"),
        ({"where": 5}, "where: expected Path"),
        ({"inner": {"c": 1}}, "inner: unknown key 'c' \\(known: a, b\\)"),
    ],
)
def test_generic_build_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^test: {message}"):
        config.build(_Schema, data, where="test")


def test_build_refuses_a_non_table() -> None:
    with pytest.raises(ConfigError, match="test: expected a table, got list"):
        config.build(_Schema, [], where="test")  # type: ignore[arg-type]
