"""docker/: the image and the two compose files, checked without a Docker
engine (none runs here or in CI).

- The Dockerfile is multi-stage on a slim Python base, runs as a non-root
  user, has a HEALTHCHECK, and copies no keys or state.
- Every command of our image (CMD, compose ``command``, healthchecks) is a real
  entry point and subcommand whose ``--help`` parses, and one the tests run.
- Every ``EPNS_SERVER_*`` variable in the compose files is a key the server's
  loader accepts, with the values given there.
- The NATS node config is valid for ``nats-server -t`` (when it is installed)
  and has the scale-out tests' MQTT settings; ``docker compose config`` runs
  when the compose plugin exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from epns import nats_config, pki
from epns.broker_config import BrokerSettings
from epns.server_config import ENV_PREFIX, ServerSettings, load_server_settings
from tests.support.nats import NatsNode, render_node

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
OUR_IMAGE = "epns:"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# Each command our image runs, and the test that runs the same command for real.
TESTED_BY = {
    ("epns-server", "run"): ("tests/support/server.py", '"server_push", "run"'),
    ("epns-server", "health"): ("tests/server/test_health_cli.py", '"server_push", "health"'),
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def _exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"not exec form: {arguments}"
    parsed = yaml.safe_load(arguments)
    assert isinstance(parsed, list)
    return [str(item) for item in parsed]


def _assert_real_command(argv: list[str]) -> None:
    """An entry point of ours, whose subcommand's ``--help`` parses, and which
    a test runs."""
    program = argv[0]
    assert program in SCRIPTS, f"{program} is not an entry point in pyproject.toml"
    done = subprocess.run([str(BIN / program), *argv[1:], "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv} --help: {done.stderr}"
    assert done.stdout.startswith("usage:")
    subcommand = next(arg for arg in argv[1:] if not arg.startswith("-"))
    test_file, invocation = TESTED_BY[(program, subcommand)]
    assert invocation in (ROOT / test_file).read_text(), f"no test runs {argv}"


def _compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / name).read_text())
    return data


def _resolve(value: str) -> str:
    """Compose's interpolation with its defaults; a required one gets a stand-in."""
    return _INTERPOLATION.sub(lambda m: (m.group(2) or "") if "-" in m.group(0)
                              else f"stand-in-for-{m.group(1).lower()}", value)


def _our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items()
            if str(service.get("image", "")).startswith(OUR_IMAGE)}


# --- Dockerfile ----------------------------------------------------------------


def test_the_image_is_multi_stage_slim_and_not_root() -> None:
    instructions = _instructions(DOCKER / "Dockerfile")
    bases = [args for word, args in instructions if word == "FROM"]
    assert len(bases) >= 2, "a build stage and a run stage"
    assert all(re.match(r"python:3\.1[1-9]-slim", base) for base in bases), bases
    final = _final_stage(instructions)
    users = [args for word, args in final if word == "USER"]
    assert users, "the run stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert any(word == "RUN" and "useradd" in args and user in args for word, args in final)
    # The defaults of every config are relative (certs/, state/) to this directory.
    workdir = [args for word, args in final if word == "WORKDIR"][-1]
    assert any(word == "VOLUME" and workdir in args for word, args in final)


def test_the_image_healthcheck_and_cmd_are_real_commands() -> None:
    final = _final_stage(_instructions(DOCKER / "Dockerfile"))
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert len(health) == 1
    options, _, command = health[0].partition(" CMD ")
    assert re.search(r"--interval=\d+s", options)
    assert re.search(r"--timeout=\d+s", options)
    _assert_real_command(_exec_form(command))
    _assert_real_command(_exec_form([args for word, args in final if word == "CMD"][-1]))


def test_the_image_exposes_the_default_ports() -> None:
    final = _final_stage(_instructions(DOCKER / "Dockerfile"))
    exposed = {int(port) for word, args in final if word == "EXPOSE" for port in args.split()}
    broker, server = BrokerSettings(), ServerSettings()
    assert exposed == {broker.listeners.primary.port, broker.listeners.fallback.port,
                       server.http.port}


def test_the_image_copies_no_secrets_or_state() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "PRIVATE KEY" not in text
    for word, args in _instructions(DOCKER / "Dockerfile"):
        if word in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN)\w*=", args), args
        if word in ("COPY", "ADD") and "--from" not in args:
            sources = args.split()[:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert not source.startswith(("certs", "state", ".venv")), source
    rules = [line for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "**", "ignore everything, then allow the packages"
    assert not any(rule.startswith("!") and ("certs" in rule or "state" in rule)
                   for rule in rules)


# --- compose files ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compose.yaml", "compose.scale.yaml"])
def test_compose_services_are_pinned_checked_and_real(name: str) -> None:
    compose = _compose(name)
    for service_name, service in compose["services"].items():
        image = str(service["image"])
        assert ":" in image, f"{service_name}: pin {image}"
        assert not image.endswith(":latest"), f"{service_name}: pin {image}"
        assert "healthcheck" in service, f"{service_name} has no healthcheck"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{service_name}: {source} is missing"
    for service_name, service in _our_services(compose).items():
        build = service["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile")
        _assert_real_command(service["command"])
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        _assert_real_command(test[1:])
        assert service.get("read_only") is True
        assert service.get("cap_drop") == ["ALL"]
        assert "user" not in service or service["user"] not in ("root", "0"), service_name


@pytest.mark.parametrize("name", ["compose.yaml", "compose.scale.yaml"])
def test_compose_environment_is_real_server_config(name: str, tmp_path: Path) -> None:
    for service_name, service in _our_services(_compose(name)).items():
        env = {key: _resolve(str(value))
               for key, value in service.get("environment", {}).items()}
        ours = {key: value for key, value in env.items() if key.startswith("EPNS_")}
        assert all(key.startswith(ENV_PREFIX) for key in ours), ours
        settings = load_server_settings(None, ours)  # a ConfigError names a wrong key
        for key, raw in service.get("environment", {}).items():
            # Credentials only ever come from the operator's environment (a
            # ..._FILE key names where one is kept, not the secret itself).
            secret_key = re.search(r"PASSWORD|SECRET|TOKEN", key) and not key.endswith("_FILE")
            if secret_key or "postgresql" in str(raw):
                assert "${" in str(raw), f"{service_name}: {key} holds a literal secret"
        assert settings.log.format == "json"


def test_all_in_one_publishes_the_three_ports() -> None:
    service = _compose("compose.yaml")["services"]["epns"]
    published = {int(str(port).split(":")[0]) for port in service["ports"]}
    assert published == {8883, 443, 9443}
    assert load_server_settings(None, {}).broker.enabled, "the embedded broker is the default"
    assert any(str(v).endswith(":/var/lib/epns") for v in service["volumes"])
    # The first start's PKI names the container's host name: the public one.
    env = {k: _resolve(str(v)) for k, v in service["environment"].items()}
    host = _resolve(service["hostname"])
    assert load_server_settings(None, env).http.public_url == f"https://{host}:9443"


def test_scale_has_three_nats_nodes_two_servers_and_postgres() -> None:
    services = _compose("compose.scale.yaml")["services"]
    nats = [s for s in services.values() if str(s["image"]).startswith("nats:")]
    assert len(nats) == 3
    assert sorted(s["environment"]["NODE_NAME"] for s in nats) == ["nats1", "nats2", "nats3"]
    assert str(services["postgres"]["image"]).startswith("postgres:")
    servers = _our_services(_compose("compose.scale.yaml"))
    assert len(servers) == 2
    loaded = [load_server_settings(None, {k: _resolve(str(v)) for k, v in
                                          s["environment"].items()}) for s in servers.values()]
    # leader mode: the one broker session passes from leader to leader.
    assert len({s.mqtt.client_id for s in loaded}) == 1, "one MQTT session, shared"
    for settings in loaded:
        assert not settings.broker.enabled
        assert settings.cluster.mode == "leader"
        assert settings.database.url.startswith("postgresql+asyncpg://")
        nodes = {host for host, _ in settings.mqtt.addresses()}
        assert nodes == {"nats1", "nats2", "nats3"}


# --- NATS node config ----------------------------------------------------------------


def _mqtt_settings(conf: str) -> dict[str, str]:
    """The MQTT block's scalar settings that the tests' nodes and ours share."""
    block = conf[conf.index("mqtt {"):]
    return {key: re.search(rf"{key}: *(\S+)", block).group(1)  # type: ignore[union-attr]
            for key in ("verify_and_map", "stream_replicas", "ack_wait", "timeout")}


def test_nats_nodes_match_the_scale_out_tests(tmp_path: Path) -> None:
    ours = (DOCKER / "nats/nats.conf").read_text()
    node = NatsNode("n1", 1, 2, 3, 4, tmp_path / "n1.conf")
    theirs = render_node(node, [], tmp_path, tmp_path, "")
    assert _mqtt_settings(ours) == _mqtt_settings(theirs)
    assert "include ./accounts.conf" in ours
    accounts = (DOCKER / "nats/accounts.conf").read_text()
    assert nats_config.render_accounts([]) in accounts


@pytest.mark.skipif(shutil.which("nats-server") is None and not Path(
    "/usr/sbin/nats-server").exists(), reason="nats-server is not installed")
@pytest.mark.parametrize("node", ["nats1", "nats2", "nats3"])
def test_nats_server_accepts_the_node_config(tmp_path: Path, node: str) -> None:
    pki.init_dev_pki(tmp_path / "certs", ("localhost",))
    conf = (DOCKER / "nats/nats.conf").read_text().replace('"/certs/', f'"{tmp_path}/certs/')
    conf = conf.replace("/data/jetstream", str(tmp_path / "js"))
    (tmp_path / "nats.conf").write_text(conf)
    accounts = nats_config.render_accounts(["agent-1", "agent-2"])
    (tmp_path / "accounts.conf").write_text(accounts)
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    done = subprocess.run([binary, "-t", "-c", str(tmp_path / "nats.conf")],
                          env={"NODE_NAME": node}, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout + done.stderr


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20,
                          check=False)
    return done.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="no docker compose plugin here")
@pytest.mark.parametrize("name", ["compose.yaml", "compose.scale.yaml"])
def test_docker_compose_config_accepts_the_file(name: str) -> None:
    # 'config' only parses and interpolates: no engine needed.
    done = subprocess.run(["docker", "compose", "-f", str(DOCKER / name), "config", "--quiet"],
                          env={"POSTGRES_PASSWORD": "stand-in", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
